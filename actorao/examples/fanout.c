/* fanout: one message that asks the node for a lot, to try the node's outbox and result limits.
 *   Fan     Target-Process, Count: sends Count messages (Action=Fanned, Index=0..Count-1) there.
 *   Spawn   Module, Count: asks for Count spawns of Module.
 *   Big     Count: answers with an Output of Count bytes.
 *   Fanned  counted.     Asked: replies with how many Fan, Spawn and Big messages took effect (a result
 *   over a node's limit is an Error, and its message leaves no trace in memory).
 *   anything else: replies with the count of Fanned received. */
#include "ao.h"

static i64 fanned, asked;

static char *open_result(size_t room) {
    out_at = malloc(room + 256);
    return out_at;
}

__attribute__((export_name("handle"))) char *handle(const char *msg, const char *env) {
    char action[32], target[64], module[64], count_text[24];
    tag(msg, "Action", action, sizeof action);
    i64 count = tag(msg, "Count", count_text, sizeof count_text) > 0 ? number(count_text) : 0;
    if (count < 0 || count > (1 << 26)) count = 0;  /* Fan and Spawn need 160 bytes each under the memory limit */
    char *start;
    if (same(action, "Fan", 4) || same(action, "Spawn", 6) || same(action, "Big", 4)) asked++;
    if (same(action, "Fan", 4) && tag(msg, "Target-Process", target, sizeof target) == 43) {
        start = open_result((size_t)count * 160);
        put("{\"ok\":true,\"response\":{\"Output\":\"fanned\",\"Messages\":[");
        for (i64 i = 0; i < count; i++) {
            if (i) put(",");
            put("{\"Target\":\""); put(target);
            put("\",\"Tags\":[{\"name\":\"Action\",\"value\":\"Fanned\"},{\"name\":\"Index\",\"value\":\"");
            put_n(i); put("\"}],\"Data\":\"\"}");
        }
        put("],\"Spawns\":[],\"Assignments\":[]}}");
    } else if (same(action, "Spawn", 6) && tag(msg, "Module", module, sizeof module) == 43) {
        start = open_result((size_t)count * 160);
        put("{\"ok\":true,\"response\":{\"Output\":\"spawning\",\"Messages\":[],\"Spawns\":[");
        for (i64 i = 0; i < count; i++) {
            if (i) put(",");
            put("{\"Tags\":[{\"name\":\"Module\",\"value\":\""); put(module);
            put("\"},{\"name\":\"Index\",\"value\":\""); put_n(i); put("\"}],\"Data\":\"\"}");
        }
        put("],\"Assignments\":[]}}");
    } else if (same(action, "Big", 4)) {
        start = open_result((size_t)count);
        put("{\"ok\":true,\"response\":{\"Output\":\"");
        for (i64 i = 0; i < count; i++) *out_at++ = 'x';
        put("\",\"Messages\":[],\"Spawns\":[],\"Assignments\":[]}}");
    } else {
        if (same(action, "Fanned", 7)) fanned++;
        start = open_result(64);
        put("{\"ok\":true,\"response\":{\"Output\":\""); put_n(same(action, "Asked", 6) ? asked : fanned);
        put("\",\"Messages\":[],\"Spawns\":[],\"Assignments\":[]}}");
    }
    return finish(start);
}
