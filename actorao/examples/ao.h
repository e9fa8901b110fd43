/* A few helpers for JSON-1 process modules in freestanding C: a bump heap, finding ao's JSON
 * fields, and writing a result. Messages come from actorao as compact JSON, so a tag reads
 * {"name":"X","value":"Y"} exactly; values these modules read (ids, numbers) carry no escapes. */
typedef unsigned long size_t;
typedef long long i64;

#define ARENA_SIZE (4 << 20)
static char arena[ARENA_SIZE];
static size_t top;

__attribute__((export_name("malloc"))) void *malloc(size_t n) {
    size_t at = (top + 7) & ~(size_t)7;
    if (at + n > ARENA_SIZE) __builtin_trap();
    top = at + n;
    return arena + at;
}

static size_t length(const char *s) { size_t n = 0; while (s[n]) n++; return n; }

static int same(const char *a, const char *b, size_t n) {
    for (size_t i = 0; i < n; i++) if (a[i] != b[i]) return 0;
    return 1;
}

/* Where the text right after the first copy of needle starts in hay, or 0. */
static const char *after(const char *hay, const char *needle) {
    size_t n = length(needle), h = length(hay);
    for (size_t i = 0; i + n <= h; i++) if (same(hay + i, needle, n)) return hay + i + n;
    return 0;
}

/* The value of tag `name` (up to its closing quote), copied into out; its length, or -1. */
static int tag(const char *msg, const char *name, char *out, int max) {
    char needle[96] = "\"name\":\"";
    int k = 8;
    for (const char *p = name; *p && k < 80; p++) needle[k++] = *p;
    const char *tail = "\",\"value\":\"";
    for (const char *p = tail; *p; p++) needle[k++] = *p;
    needle[k] = 0;
    const char *v = after(msg, needle);
    if (!v) return -1;
    int n = 0;
    while (v[n] && v[n] != '"' && n < max - 1) { out[n] = v[n]; n++; }
    out[n] = 0;
    return n;
}

/* The 43-character id after "Field":" in the message, copied into out (44 bytes); 1 if found. */
static int field_id(const char *msg, const char *key, char *out) {
    const char *v = after(msg, key);
    if (!v) return 0;
    for (int i = 0; i < 43; i++) { if (!v[i]) return 0; out[i] = v[i]; }
    out[43] = 0;
    return 1;
}

static i64 number(const char *s) {
    i64 n = 0;
    if (!*s) return -1;
    for (; *s; s++) { if (*s < '0' || *s > '9') return -1; n = n * 10 + (*s - '0'); }
    return n;
}

/* Building the result. */
static char *out_at;
static void put(const char *s) { while (*s) *out_at++ = *s++; }
static void put_n(i64 v) {
    char digits[24]; int n = 0;
    if (v < 0) { *out_at++ = '-'; v = -v; }
    do { digits[n++] = '0' + (char)(v % 10); v /= 10; } while (v);
    while (n) *out_at++ = digits[--n];
}
static char *begin(void) { out_at = malloc(1 << 16); return out_at; }
static char *finish(char *start) { *out_at = 0; top = 0; return start; }
