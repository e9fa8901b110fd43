/* token: ao's token pattern. Balances of up to 4,096 accounts, by id.
 *   Mint      (from the process's owner) Recipient, Quantity: new supply.
 *   Transfer  Recipient, Quantity: moves from the sender (its From) to Recipient, and sends a
 *             Debit-Notice to the sender and a Credit-Notice to the recipient. Insufficient
 *             balance: nothing moves, and a Transfer-Error goes back to the sender.
 *   Balance   Account: replies with that account's balance.   Total: replies with the supply. */
#include "ao.h"

#define SLOTS 4096
static struct { char id[44]; i64 balance; } accounts[SLOTS];
static char owner[44];

static int slot_of(const char *id) {
    unsigned h = 2166136261u;
    for (int i = 0; i < 43; i++) h = (h ^ (unsigned char)id[i]) * 16777619u;
    for (int probe = 0; probe < SLOTS; probe++) {
        int s = (int)((h + (unsigned)probe) % SLOTS);
        if (!accounts[s].id[0]) { for (int i = 0; i < 44; i++) accounts[s].id[i] = id[i]; return s; }
        if (same(accounts[s].id, id, 43)) return s;
    }
    __builtin_trap();
}

static void notice(const char *target, const char *action, const char *who_tag, const char *who, i64 q) {
    put("{\"Target\":\""); put(target); put("\",\"Tags\":[{\"name\":\"Action\",\"value\":\""); put(action);
    put("\"},{\"name\":\""); put(who_tag); put("\",\"value\":\""); put(who);
    put("\"},{\"name\":\"Quantity\",\"value\":\""); put_n(q); put("\"}],\"Data\":\"\"}");
}

__attribute__((export_name("handle"))) char *handle(const char *msg, const char *env) {
    char action[32], recipient[64], quantity[32], from[44], account[64];
    char *start = begin();
    if (!owner[0]) field_id(env, "\"Owner\":\"", owner);
    tag(msg, "Action", action, sizeof action);
    field_id(msg, "\"From\":\"", from);
    put("{\"ok\":true,\"response\":{\"Output\":\"");
    if (same(action, "Mint", 5) && same(from, owner, 43)) {
        i64 q = tag(msg, "Quantity", quantity, sizeof quantity) > 0 ? number(quantity) : -1;
        if (tag(msg, "Recipient", recipient, sizeof recipient) == 43 && q > 0) {
            accounts[slot_of(recipient)].balance += q;
            put("minted");
        }
        put("\",\"Messages\":[]");
    } else if (same(action, "Transfer", 9)) {
        i64 q = tag(msg, "Quantity", quantity, sizeof quantity) > 0 ? number(quantity) : -1;
        int ok = tag(msg, "Recipient", recipient, sizeof recipient) == 43 && q > 0;
        int s = slot_of(from);
        if (ok && accounts[s].balance >= q) {
            accounts[s].balance -= q;
            accounts[slot_of(recipient)].balance += q;
            put("transferred\",\"Messages\":[");
            notice(from, "Debit-Notice", "Recipient", recipient, q);
            put(",");
            notice(recipient, "Credit-Notice", "Sender", from, q);
            put("]");
        } else {
            put("refused\",\"Messages\":[");
            notice(from, "Transfer-Error", "Recipient", ok ? recipient : "none", q);
            put("]");
        }
    } else if (same(action, "Balance", 8) && tag(msg, "Account", account, sizeof account) == 43) {
        put_n(accounts[slot_of(account)].balance);
        put("\",\"Messages\":[]");
    } else if (same(action, "Total", 6)) {
        i64 total = 0;
        for (int s = 0; s < SLOTS; s++) total += accounts[s].balance;
        put_n(total);
        put("\",\"Messages\":[]");
    } else {
        put("\",\"Messages\":[]");
    }
    put(",\"Spawns\":[],\"Assignments\":[]}}");
    return finish(start);
}
