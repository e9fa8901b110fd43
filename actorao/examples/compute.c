/* compute: a stand-in for an AI agent's inference step, a tiny transformer layer's matmuls.
 * Each Step message multiplies a 48x48 float activation matrix by a 48x48 weight matrix (with a
 * ReLU), and a 32x32 integer matrix by itself (quantised-style i32 arithmetic): a few hundred
 * microseconds of integer and float work. The state changes with every step, so every message
 * depends on the one before, and the output (a checksum) proves the order. */
#include "ao.h"

#define N 48
#define Q 32

static float activations[N * N];
static float weights[N * N];
static int quantised[Q * Q];
static i64 steps;

static void seed(void) {
    for (int i = 0; i < N * N; i++) {
        activations[i] = (float)((i * 7) % 13) / 13.0f;
        weights[i] = (float)((i * 5) % 11) / 11.0f - 0.5f;
    }
    for (int i = 0; i < Q * Q; i++) quantised[i] = (i * 3) % 17 - 8;
}

static void float_layer(void) {
    static float out[N * N];
    for (int r = 0; r < N; r++)
        for (int c = 0; c < N; c++) {
            float sum = 0.0f;
            for (int k = 0; k < N; k++) sum += activations[r * N + k] * weights[k * N + c];
            out[r * N + c] = sum > 0.0f ? sum / (float)N : 0.0f;  /* scaled ReLU keeps values bounded */
        }
    for (int i = 0; i < N * N; i++) activations[i] = out[i] + 0.001f;
}

static i64 integer_layer(void) {
    static int out[Q * Q];
    i64 check = 0;
    for (int r = 0; r < Q; r++)
        for (int c = 0; c < Q; c++) {
            int sum = 0;
            for (int k = 0; k < Q; k++) sum += quantised[r * Q + k] * quantised[k * Q + c];
            out[r * Q + c] = (sum >> 6) % 97;
            check += out[r * Q + c];
        }
    for (int i = 0; i < Q * Q; i++) quantised[i] = out[i] - 48;
    return check;
}

__attribute__((export_name("handle"))) char *handle(const char *msg, const char *env) {
    (void)msg;
    (void)env;
    char *start = begin();
    if (!steps) seed();
    steps++;
    float_layer();
    i64 check = integer_layer();
    i64 fsum = 0;
    for (int i = 0; i < N * N; i += 97) fsum += (i64)(activations[i] * 1000.0f);
    put("{\"ok\":true,\"response\":{\"Output\":\"");
    put_n(steps); put(":"); put_n(check); put(":"); put_n(fsum);
    put("\",\"Messages\":[],\"Spawns\":[],\"Assignments\":[]}}");
    return finish(start);
}
