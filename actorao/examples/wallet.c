/* wallet: an account that pays through a token process and counts the notices it gets.
 *   Pay      Token, Recipient, Quantity: sends Transfer(Recipient, Quantity) to Token.
 *   Credit-Notice / Debit-Notice / Transfer-Error: counted.   anything else: replies with the counts. */
#include "ao.h"

static i64 credits, debits, errors;

__attribute__((export_name("handle"))) char *handle(const char *msg, const char *env) {
    char action[32], token[64], recipient[64], quantity[32];
    char *start = begin();
    tag(msg, "Action", action, sizeof action);
    put("{\"ok\":true,\"response\":{\"Output\":\"");
    if (same(action, "Pay", 4) && tag(msg, "Token", token, sizeof token) == 43
        && tag(msg, "Recipient", recipient, sizeof recipient) == 43
        && tag(msg, "Quantity", quantity, sizeof quantity) > 0) {
        put("paying\",\"Messages\":[{\"Target\":\""); put(token);
        put("\",\"Tags\":[{\"name\":\"Action\",\"value\":\"Transfer\"},{\"name\":\"Recipient\",\"value\":\"");
        put(recipient); put("\"},{\"name\":\"Quantity\",\"value\":\""); put(quantity); put("\"}],\"Data\":\"\"}]");
    } else {
        if (same(action, "Credit-Notice", 14)) credits++;
        else if (same(action, "Debit-Notice", 13)) debits++;
        else if (same(action, "Transfer-Error", 15)) errors++;
        put_n(credits); put(" "); put_n(debits); put(" "); put_n(errors);
        put("\",\"Messages\":[]");
    }
    put(",\"Spawns\":[],\"Assignments\":[]}}");
    return finish(start);
}
