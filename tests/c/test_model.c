/* test_model.c: plain C tests of cx_json and cx_model (no Python).
 *
 * Usage: test_model [MODEL_DIR]
 * MODEL_DIR (or $COARCH_MODEL_DIR) is the real all-MiniLM-L6-v2 folder; without it the real-model
 * checks are skipped. Broken and tiny model folders are written into a fresh temp dir. Exits 0
 * when every check passes. Build and run with `make -C tests/c check` (or `asan`). */
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cx_json.h"
#include "cx_model.h"

#include "check.h"

static char temp_root[256];

/* ------------------------------------------------------------------------------------------ */
/* JSON */

static cx_json_document *parse(const char *text, cx_error *err)
{
    return cx_json_parse(text, strlen(text), "test.json", err);
}

static void test_json_valid(void)
{
    cx_error err = {{0}};
    const char *text = " {\"a\": 1, \"b\": [true, false, null, -2.5e3, \"x\\n\\u00e9\\ud83d\\ude00\"],"
                       " \"c\": {\"d\": {}}, \"e\": [], \"big\": 9223372036854775807,"
                       " \"bigger\": 9223372036854775808, \"neg\": -9223372036854775808,"
                       " \"float_int\": 1e3, \"half\": 0.5, \"zero\": -0, \"tiny\": 1e-400,"
                       " \"esc\": \"\\\"\\\\\\/\\b\\f\\r\\t\", \"\": \"empty key\"} \n";
    cx_json_document *doc = parse(text, &err);
    CHECK(doc != NULL, "%s", err.message);
    if (doc == NULL)
        return;
    const cx_json_value *root = cx_json_root(doc);
    CHECK(cx_json_type_of(root) == CX_JSON_OBJECT, "root type");
    CHECK(cx_json_object_size(root) == 13, "size %zu", cx_json_object_size(root));
    CHECK(strcmp(cx_json_object_key(root, 0), "a") == 0, "document order");
    CHECK(strcmp(cx_json_object_key(root, 12), "") == 0, "document order");
    CHECK(cx_json_object_key(root, 13) == NULL, "out of range key");
    int64_t i = 0;
    CHECK(cx_json_as_int64(cx_json_get(root, "a"), &i) && i == 1, "a");
    CHECK(cx_json_get(root, "missing") == NULL, "missing key");
    CHECK(cx_json_get(root, "A") == NULL, "keys are case-sensitive");
    const cx_json_value *b = cx_json_get(root, "b");
    CHECK(cx_json_array_size(b) == 5, "array size");
    int flag = -1;
    CHECK(cx_json_as_bool(cx_json_array_item(b, 0), &flag) && flag == 1, "true");
    CHECK(cx_json_as_bool(cx_json_array_item(b, 1), &flag) && flag == 0, "false");
    CHECK(cx_json_type_of(cx_json_array_item(b, 2)) == CX_JSON_NULL, "null");
    double d = 0;
    CHECK(cx_json_as_double(cx_json_array_item(b, 3), &d) && d == -2500.0, "double %g", d);
    CHECK(cx_json_as_int64(cx_json_array_item(b, 3), &i) && i == -2500, "integral double");
    const char *s = NULL;
    CHECK(cx_json_as_string(cx_json_array_item(b, 4), &s) &&
              strcmp(s, "x\n\xc3\xa9\xf0\x9f\x98\x80") == 0,
          "escapes and surrogate pair decoded");
    CHECK(cx_json_array_item(b, 5) == NULL, "array out of range");
    CHECK(cx_json_array_item(root, 0) == NULL, "object is not an array");
    CHECK(!cx_json_as_string(cx_json_array_item(b, 0), &s), "bool is not a string");
    CHECK(cx_json_object_size(cx_json_get(cx_json_get(root, "c"), "d")) == 0, "empty object");
    CHECK(cx_json_type_of(cx_json_get(root, "e")) == CX_JSON_ARRAY, "empty array");
    CHECK(cx_json_as_int64(cx_json_get(root, "big"), &i) && i == INT64_MAX, "int64 max");
    CHECK(!cx_json_as_int64(cx_json_get(root, "bigger"), &i), "beyond int64 is not an integer");
    CHECK(cx_json_as_double(cx_json_get(root, "bigger"), &d) && d == 9223372036854775808.0,
          "but it is a double");
    CHECK(cx_json_as_int64(cx_json_get(root, "neg"), &i) && i == INT64_MIN, "int64 min");
    CHECK(cx_json_as_int64(cx_json_get(root, "float_int"), &i) && i == 1000, "1e3");
    CHECK(!cx_json_as_int64(cx_json_get(root, "half"), &i), "0.5 is not an integer");
    CHECK(cx_json_as_double(cx_json_get(root, "half"), &d) && d == 0.5, "0.5");
    CHECK(cx_json_as_int64(cx_json_get(root, "zero"), &i) && i == 0, "-0");
    CHECK(cx_json_as_double(cx_json_get(root, "tiny"), &d) && d == 0.0, "underflow to 0");
    CHECK(cx_json_as_string(cx_json_get(root, "esc"), &s) && strcmp(s, "\"\\/\b\f\r\t") == 0,
          "simple escapes");
    CHECK(cx_json_as_string(cx_json_get(root, ""), &s) && strcmp(s, "empty key") == 0,
          "empty key");
    cx_json_free(doc);

    /* Scalars at the root, a BOM, NULL-safe accessors. */
    doc = parse("\xEF\xBB\xBF 42 ", &err);
    CHECK(doc != NULL && cx_json_as_int64(cx_json_root(doc), &i) && i == 42, "%s", err.message);
    cx_json_free(doc);
    cx_json_free(NULL);
    CHECK(cx_json_root(NULL) == NULL && cx_json_get(NULL, "a") == NULL &&
              cx_json_array_size(NULL) == 0 && cx_json_object_size(NULL) == 0,
          "NULL-safe accessors");

    /* Nesting: 64 levels parse, 65 do not. */
    char deep[200];
    memset(deep, '[', 64);
    memset(deep + 64, ']', 64);
    deep[128] = '\0';
    doc = parse(deep, &err);
    CHECK(doc != NULL, "64 levels: %s", err.message);
    cx_json_free(doc);
    memset(deep, '[', 65);
    memset(deep + 65, ']', 65);
    deep[130] = '\0';
    doc = parse(deep, &err);
    CHECK(doc == NULL && strstr(err.message, "nesting deeper than 64") != NULL, "65 levels: %s",
          err.message);
    /* Very deep input fails fast instead of overflowing the stack. */
    size_t huge = 1000000;
    char *bomb = malloc(huge);
    memset(bomb, '[', huge);
    doc = cx_json_parse(bomb, huge, "bomb", &err);
    CHECK(doc == NULL, "deep bomb");
    free(bomb);

    /* A large object: lookup is by binary search over sorted keys. */
    size_t members = 5000;
    char *big = malloc(members * 32 + 16);
    size_t used = 0;
    big[used++] = '{';
    for (size_t k = 0; k < members; k++)
        used += (size_t)sprintf(big + used, "%s\"key%zu\": %zu", k ? "," : "", (k * 7919) % members, k);
    big[used++] = '}';
    doc = cx_json_parse(big, used, "big", &err);
    CHECK(doc != NULL, "%s", err.message);
    int all_found = 1;
    for (size_t k = 0; k < members && doc != NULL; k++) {
        char key[32];
        sprintf(key, "key%zu", (k * 7919) % members);
        all_found &= cx_json_as_int64(cx_json_get(cx_json_root(doc), key), &i) && (size_t)i == k;
    }
    CHECK(all_found, "every key of a large object found");
    cx_json_free(doc);
    free(big);
}

static void expect_json_error(const char *text, size_t length, const char *why, long byte)
{
    cx_error err = {{0}};
    cx_json_document *doc = cx_json_parse(text, length, "bad.json", &err);
    CHECK(doc == NULL, "accepted invalid JSON: %.*s", (int)length, text);
    cx_json_free(doc);
    CHECK(strncmp(err.message, "invalid JSON (bad.json): ", 25) == 0, "message: %s", err.message);
    if (why != NULL)
        CHECK(strstr(err.message, why) != NULL, "expected '%s' in: %s", why, err.message);
    if (byte >= 0) {
        char at[48];
        snprintf(at, sizeof at, " at byte %ld", byte);
        CHECK(strstr(err.message, at) != NULL, "expected '%s' in: %s", at, err.message);
    }
}

static void test_json_invalid(void)
{
    static const struct {
        const char *text;
        const char *why;
        long byte;
    } cases[] = {
        {"", "unexpected end of input", 0},
        {"   ", "unexpected end of input", 3},
        {"{", "unterminated object", 1},
        {"{\"a\"", "expected ':'", 4},
        {"{\"a\":}", "unexpected character", 5},
        {"{\"a\":1,}", "expected a string key", 7},
        {"{\"a\":1 \"b\":2}", "expected ',' or '}'", 7},
        {"{a:1}", "expected a string key", 1},
        {"[1,]", "unexpected character", 3},
        {"[1 2]", "expected ',' or ']'", 3},
        {"[", "unexpected end of input", 1},
        {"[1", "unterminated array", 2},
        {"\"abc", "unterminated string", 4},
        {"\"a\\", "unterminated string", 3},
        {"\"\\x\"", "invalid escape", 1},
        {"\"\\u12\"", "invalid \\u escape", 1},
        {"\"\\u12G4\"", "invalid \\u escape", 1},
        {"\"\\ud83d\"", "unpaired high surrogate", 1},
        {"\"\\ud83d\\u0041\"", "unpaired high surrogate", 1},
        {"\"\\ude00\"", "unpaired low surrogate", 1},
        {"\"\\u0000\"", "escaped NUL", 1},
        {"\"a\tb\"", "unescaped control character", 2},
        {"\"\xff\"", "invalid UTF-8", 1},
        {"\"\xc0\xaf\"", "invalid UTF-8", 1},         /* overlong '/' */
        {"\"\xed\xa0\x80\"", "invalid UTF-8", 1},     /* encoded surrogate */
        {"\"\xf4\x90\x80\x80\"", "invalid UTF-8", 1}, /* above U+10FFFF */
        {"\"\xe2\x82\"", "invalid UTF-8", 1},         /* truncated */
        {"01", "unexpected data after the document", 1},
        {"-", "invalid number", 1},
        {"1.", "expected a digit after '.'", 2},
        {".5", "unexpected character", 0},
        {"1e", "expected a digit in the exponent", 2},
        {"1e+", "expected a digit in the exponent", 3},
        {"+1", "unexpected character", 0},
        {"1e400", "number out of range", 0},
        {"-1e400", "number out of range", 0},
        {"NaN", "unexpected character", 0},
        {"Infinity", "unexpected character", 0},
        {"tru", "invalid literal", 0},
        {"nul", "invalid literal", 0},
        {"True", "unexpected character", 0},
        {"{} {}", "unexpected data after the document", 3},
        {"{\"a\":1,\"b\":2,\"a\":3}", "duplicate key \"a\"", 13},
        {"[1] x", "unexpected data after the document", 4},
        {"\xEF\xBB", "unexpected character", 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        expect_json_error(cases[k].text, strlen(cases[k].text), cases[k].why, cases[k].byte);
    /* An embedded NUL byte is outside any string: not JSON. */
    expect_json_error("[1,\0 2]", 7, "unexpected character", 3);
    char long_number[400];
    memset(long_number, '1', sizeof long_number - 1);
    long_number[sizeof long_number - 1] = '\0';
    expect_json_error(long_number, strlen(long_number), "number literal too long", -1);
    cx_error err = {{0}};
    CHECK(cx_json_parse(NULL, 3, "null", &err) == NULL, "NULL text");
    CHECK(cx_json_parse("x", 1, "no err", NULL) == NULL, "NULL err is allowed");
}

/* strtod follows LC_NUMERIC: a comma locale must not change how numbers parse. */
static void test_json_locale(void)
{
    const char *locales[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "ru_RU.UTF-8"};
    const char *set = NULL;
    for (size_t k = 0; k < 4 && set == NULL; k++)
        set = setlocale(LC_NUMERIC, locales[k]);
    if (set == NULL) {
        printf("skip: no comma-decimal locale installed\n");
        return;
    }
    cx_error err = {{0}};
    cx_json_document *doc = parse("[1.5, 2.25e1]", &err);
    double a = 0, b = 0;
    CHECK(doc != NULL && cx_json_as_double(cx_json_array_item(cx_json_root(doc), 0), &a) &&
              cx_json_as_double(cx_json_array_item(cx_json_root(doc), 1), &b) && a == 1.5 &&
              b == 22.5,
          "locale %s: %g %g", set, a, b);
    cx_json_free(doc);
    setlocale(LC_NUMERIC, "C");
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Every prefix and many random mutations of a valid document parse or fail cleanly (run under
 * `make asan` to catch any out-of-bounds read). */
static void test_json_robustness(void)
{
    const char *valid = "{\"__metadata__\":{\"format\":\"pt\"},\"w\":{\"dtype\":\"F32\",\"shape\":"
                        "[2,3],\"data_offsets\":[0,24]},\"s\":\"\\u00e9\\ud83d\\ude00\\n\","
                        "\"n\":[-1.5e-3,0,true,false,null]}";
    size_t length = strlen(valid);
    cx_error err;
    for (size_t cut = 0; cut < length; cut++) {
        char *copy = malloc(cut ? cut : 1); /* exact size: ASan sees any overread */
        memcpy(copy, valid, cut);
        cx_json_document *doc = cx_json_parse(copy, cut, "prefix", &err);
        CHECK(doc == NULL, "prefix of %zu bytes accepted", cut);
        cx_json_free(doc);
        free(copy);
    }
    static const char alphabet[] = "{}[]\",:\\u0123456789abcdefABCDEF.eE+- \t\ntrufalsn\xff\xc3\xa9";
    int parsed = 0;
    for (int round = 0; round < 20000; round++) {
        char *copy = malloc(length);
        memcpy(copy, valid, length);
        int edits = 1 + (int)(rng() % 4);
        for (int e = 0; e < edits; e++)
            copy[rng() % length] = alphabet[rng() % (sizeof alphabet - 1)];
        size_t cut = length - (rng() % 3 == 0 ? rng() % length : 0);
        cx_json_document *doc = cx_json_parse(copy, cut, "fuzz", &err);
        if (doc != NULL) {
            parsed++;
            const cx_json_value *root = cx_json_root(doc);
            for (size_t k = 0; k < cx_json_object_size(root); k++)
                (void)cx_json_object_key(root, k);
        } else {
            CHECK(strstr(err.message, " at byte ") != NULL, "message: %s", err.message);
        }
        cx_json_free(doc);
        free(copy);
    }
    printf("json fuzz: %d of 20000 mutations still parse\n", parsed);
}

/* ------------------------------------------------------------------------------------------ */
/* Tiny model fixtures */

enum { H = 8, HEADS = 2, I = 16, P = 16, T = 2, LAYERS = 2 };
static const char *const VOCAB[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the",
                                    "a",     "def",   "class", "return", "##s",   "x"};
enum { V = sizeof VOCAB / sizeof VOCAB[0], MAX_TENSORS = 64 };

typedef struct fixture_tensor {
    char name[128];     /* as written in the header */
    const char *dtype;  /* as written in the header */
    int rank;
    int64_t dims[3];     /* as written in the header */
    int64_t begin, end;  /* data_offsets as written in the header */
    const char *entry;   /* when set, the raw JSON written for this entry instead */
    int omit;            /* leave out of the header */
    /* Where its data really is (filled from the true shape and dtype at layout time). */
    int64_t data_begin, data_count;
    size_t element_size;
    int value_seed;
} fixture_tensor;

typedef struct fixture {
    fixture_tensor tensors[MAX_TENSORS];
    int count;
    int64_t data_size;
    int header_extra; /* extra spaces after the header JSON (misaligns data when not % 4) */
} fixture;

static float fill_value(int seed, int64_t index)
{
    return (float)((index * 7 + seed * 3) % 17 - 8) / 16.0f; /* exact in F16 and BF16 */
}

static uint16_t float_to_half_exact(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000);
    if ((bits & 0x7FFFFFFF) == 0)
        return sign;
    int exponent = (int)((bits >> 23) & 0xFF) - 127 + 15;
    return (uint16_t)(sign | (exponent << 10) | ((bits >> 13) & 0x3FF)); /* normal values only */
}

static void fixture_add(fixture *f, const char *name, const char *dtype, int rank, int64_t d0,
                        int64_t d1)
{
    fixture_tensor *t = &f->tensors[f->count];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dtype;
    t->rank = rank;
    t->dims[0] = d0;
    t->dims[1] = d1;
    t->value_seed = f->count;
    t->element_size = strcmp(dtype, "F32") == 0 ? 4 : strcmp(dtype, "I64") == 0 ? 8 : 2;
    t->data_count = rank == 1 ? d0 : d0 * d1;
    t->data_begin = f->data_size;
    t->begin = f->data_size;
    t->end = f->data_size + t->data_count * (int64_t)t->element_size;
    f->data_size = t->end;
    f->count++;
}

/* A valid tiny BERT: H=8, 2 heads, I=16, P=16, T=2, 2 layers, V=12. `prefix` is "" or "bert.". */
static void fixture_init(fixture *f, const char *dtype, const char *prefix, int legacy_norm)
{
    memset(f, 0, sizeof *f);
    char name[128];
    const char *w = legacy_norm ? "gamma" : "weight", *b = legacy_norm ? "beta" : "bias";
    fixture_add(f, "embeddings.position_ids", "I64", 2, 1, P); /* unused, like the real model */
#define ADD(fmt, arg, rank, d0, d1)                                                                \
    do {                                                                                           \
        snprintf(name, sizeof name, "%s" fmt, prefix, arg);                                        \
        fixture_add(f, name, dtype, rank, d0, d1);                                                 \
    } while (0)
    ADD("embeddings.word_embeddings.weight%s", "", 2, V, H);
    ADD("embeddings.position_embeddings.weight%s", "", 2, P, H);
    ADD("embeddings.token_type_embeddings.weight%s", "", 2, T, H);
    ADD("embeddings.LayerNorm.%s", w, 1, H, 0);
    ADD("embeddings.LayerNorm.%s", b, 1, H, 0);
    for (int l = 0; l < LAYERS; l++) {
        char layer[48];
        static const char *const qkv[] = {"query", "key", "value"};
        for (int k = 0; k < 3; k++) {
            snprintf(layer, sizeof layer, "%d.attention.self.%s", l, qkv[k]);
            ADD("encoder.layer.%s.weight", layer, 2, H, H);
            ADD("encoder.layer.%s.bias", layer, 1, H, 0);
        }
        snprintf(layer, sizeof layer, "%d", l);
        ADD("encoder.layer.%s.attention.output.dense.weight", layer, 2, H, H);
        ADD("encoder.layer.%s.attention.output.dense.bias", layer, 1, H, 0);
        snprintf(layer, sizeof layer, "%d.attention.output.LayerNorm.%s", l, w);
        ADD("encoder.layer.%s", layer, 1, H, 0);
        snprintf(layer, sizeof layer, "%d.attention.output.LayerNorm.%s", l, b);
        ADD("encoder.layer.%s", layer, 1, H, 0);
        snprintf(layer, sizeof layer, "%d", l);
        ADD("encoder.layer.%s.intermediate.dense.weight", layer, 2, I, H);
        ADD("encoder.layer.%s.intermediate.dense.bias", layer, 1, I, 0);
        ADD("encoder.layer.%s.output.dense.weight", layer, 2, H, I);
        ADD("encoder.layer.%s.output.dense.bias", layer, 1, H, 0);
        snprintf(layer, sizeof layer, "%d.output.LayerNorm.%s", l, w);
        ADD("encoder.layer.%s", layer, 1, H, 0);
        snprintf(layer, sizeof layer, "%d.output.LayerNorm.%s", l, b);
        ADD("encoder.layer.%s", layer, 1, H, 0);
    }
    ADD("pooler.dense.weight%s", "", 2, H, H); /* unused */
#undef ADD
}

static fixture_tensor *fixture_find(fixture *f, const char *name)
{
    for (int k = 0; k < f->count; k++)
        if (strcmp(f->tensors[k].name, name) == 0)
            return &f->tensors[k];
    fprintf(stderr, "fixture has no tensor %s\n", name);
    abort();
}

static void write_text(const char *directory, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", directory, name);
    FILE *file = fopen(path, "wb");
    if (file == NULL) {
        perror(path);
        abort();
    }
    fputs(text, file);
    fclose(file);
}

static void write_bytes(const char *directory, const char *name, const void *data, size_t size)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", directory, name);
    FILE *file = fopen(path, "wb");
    if (file == NULL) {
        perror(path);
        abort();
    }
    if (size)
        fwrite(data, 1, size, file);
    fclose(file);
}

/* Serialises `f` into a safetensors image; returns malloc'ed bytes and sets *size. */
static unsigned char *fixture_image(const fixture *f, size_t *size)
{
    size_t capacity = 65536, used = 0;
    char *header = malloc(capacity);
    used += (size_t)snprintf(header + used, capacity - used, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int k = 0; k < f->count; k++) {
        const fixture_tensor *t = &f->tensors[k];
        if (t->omit)
            continue;
        if (t->entry != NULL) {
            used += (size_t)snprintf(header + used, capacity - used, ",\"%s\":%s", t->name, t->entry);
            continue;
        }
        used += (size_t)snprintf(header + used, capacity - used, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                                 t->name, t->dtype);
        for (int d = 0; d < t->rank; d++)
            used += (size_t)snprintf(header + used, capacity - used, "%s%lld", d ? "," : "",
                                     (long long)t->dims[d]);
        used += (size_t)snprintf(header + used, capacity - used, "],\"data_offsets\":[%lld,%lld]}",
                                 (long long)t->begin, (long long)t->end);
    }
    used += (size_t)snprintf(header + used, capacity - used, "}");
    while (used % 8 != 0)
        header[used++] = ' ';
    for (int k = 0; k < f->header_extra; k++)
        header[used++] = ' ';
    *size = 8 + used + (size_t)f->data_size;
    unsigned char *image = calloc(1, *size);
    for (int k = 0; k < 8; k++)
        image[k] = (unsigned char)((uint64_t)used >> (8 * k));
    memcpy(image + 8, header, used);
    unsigned char *data = image + 8 + used;
    for (int k = 0; k < f->count; k++) {
        const fixture_tensor *t = &f->tensors[k];
        unsigned char *out = data + t->data_begin;
        for (int64_t e = 0; e < t->data_count; e++) {
            float v = fill_value(t->value_seed, e);
            if (t->element_size == 4) {
                memcpy(out + 4 * e, &v, 4);
            } else if (t->element_size == 2) {
                uint32_t bits;
                memcpy(&bits, &v, 4);
                uint16_t half = strcmp(t->dtype, "BF16") == 0 ? (uint16_t)(bits >> 16)
                                                              : float_to_half_exact(v);
                out[2 * e] = (unsigned char)half;
                out[2 * e + 1] = (unsigned char)(half >> 8);
            } else {
                int64_t whole = e;
                memcpy(out + 8 * e, &whole, 8);
            }
        }
    }
    free(header);
    return image;
}

static const char TINY_CONFIG[] =
    "{\"architectures\": [\"BertModel\"], \"hidden_act\": \"gelu\", \"hidden_size\": 8,"
    " \"intermediate_size\": 16, \"layer_norm_eps\": 1e-12, \"max_position_embeddings\": 16,"
    " \"model_type\": \"bert\", \"num_attention_heads\": 2, \"num_hidden_layers\": 2,"
    " \"type_vocab_size\": 2, \"vocab_size\": 12, \"position_embedding_type\": \"absolute\"}";

static int folder_counter;

/* A fresh folder holding the tiny model: config, vocab and `f` as model.safetensors. */
static char *make_folder(const fixture *f, const char *config)
{
    char *directory = malloc(512);
    snprintf(directory, 512, "%s/model%d", temp_root, folder_counter++);
    if (mkdir(directory, 0700) != 0) {
        perror(directory);
        abort();
    }
    write_text(directory, "config.json", config != NULL ? config : TINY_CONFIG);
    char vocab[512] = "";
    for (int k = 0; k < V; k++) {
        strcat(vocab, VOCAB[k]);
        strcat(vocab, "\n");
    }
    write_text(directory, "vocab.txt", vocab);
    if (f != NULL) {
        size_t size;
        unsigned char *image = fixture_image(f, &size);
        write_bytes(directory, "model.safetensors", image, size);
        free(image);
    }
    return directory;
}

static void expect_open_error(const char *directory, cx_status expected, const char *part1,
                              const char *part2, int line)
{
    cx_error err = {{0}};
    cx_status status = CX_OK;
    cx_model *model = cx_model_open(directory, &status, &err);
    CHECK(model == NULL, "line %d: opened a broken model", line);
    cx_model_free(model);
    CHECK(status == expected, "line %d: status %d, expected %d: %s", line, status, expected,
          err.message);
    if (part1 != NULL)
        CHECK(strstr(err.message, part1) != NULL, "line %d: expected '%s' in: %s", line, part1,
              err.message);
    if (part2 != NULL)
        CHECK(strstr(err.message, part2) != NULL, "line %d: expected '%s' in: %s", line, part2,
              err.message);
}
#define EXPECT_ERROR(dir, status, part1, part2) expect_open_error(dir, status, part1, part2, __LINE__)

static int tensor_equals(const float *got, const fixture_tensor *t)
{
    for (int64_t e = 0; e < t->data_count; e++)
        if (got[e] != fill_value(t->value_seed, e))
            return 0;
    return 1;
}

/* Checks that `loaded` holds the values written for tensor prefix + name (printf-style). */
static void expect_tensor(fixture *f, const float *loaded, const char *prefix, const char *what,
                          const char *format, ...)
{
    char name[160], full[200];
    va_list args;
    va_start(args, format);
    vsnprintf(name, sizeof name, format, args);
    va_end(args);
    snprintf(full, sizeof full, "%s%s", prefix, name);
    CHECK(loaded != NULL && tensor_equals(loaded, fixture_find(f, full)), "%s: %s", what, full);
}

/* Opens a valid fixture and checks config and every weight against what was written. */
static void check_valid(const fixture *f, const char *prefix, int legacy, const char *what)
{
    char *directory = make_folder(f, NULL);
    cx_error err = {{0}};
    cx_status status = CX_ERR_BACKEND;
    cx_model *model = cx_model_open(directory, &status, &err);
    CHECK(model != NULL && status == CX_OK, "%s: %s", what, err.message);
    if (model == NULL) {
        free(directory);
        return;
    }
    const cx_bert_config *c = cx_model_config(model);
    CHECK(c->vocab_size == V && c->hidden_size == H && c->num_heads == HEADS &&
              c->intermediate_size == I && c->num_layers == LAYERS &&
              c->max_position_embeddings == P && c->type_vocab_size == T &&
              c->layer_norm_eps == 1e-12 && c->max_seq_length == P && c->do_lower_case == 1,
          "%s: config", what);
    CHECK(strcmp(cx_model_directory(model), directory) == 0, "directory");
    char vocab[600];
    snprintf(vocab, sizeof vocab, "%s/vocab.txt", directory);
    CHECK(strcmp(cx_model_vocab_path(model), vocab) == 0, "vocab path %s", cx_model_vocab_path(model));
    const cx_bert_weights *w = cx_model_weights(model);
    fixture *copy = malloc(sizeof *copy);
    memcpy(copy, f, sizeof *copy);
    const char *nw = legacy ? "gamma" : "weight", *nb = legacy ? "beta" : "bias";
#define EXPECT_TENSOR(loaded, ...) expect_tensor(copy, loaded, prefix, what, __VA_ARGS__)
    EXPECT_TENSOR(w->word_embeddings, "embeddings.word_embeddings.weight");
    EXPECT_TENSOR(w->position_embeddings, "embeddings.position_embeddings.weight");
    EXPECT_TENSOR(w->token_type_embeddings, "embeddings.token_type_embeddings.weight");
    EXPECT_TENSOR(w->embedding_norm_weight, "embeddings.LayerNorm.%s", nw);
    EXPECT_TENSOR(w->embedding_norm_bias, "embeddings.LayerNorm.%s", nb);
    for (int l = 0; l < LAYERS; l++) {
        const cx_bert_layer_weights *lw = &w->layers[l];
        EXPECT_TENSOR(lw->query_weight, "encoder.layer.%d.attention.self.query.weight", l);
        EXPECT_TENSOR(lw->query_bias, "encoder.layer.%d.attention.self.query.bias", l);
        EXPECT_TENSOR(lw->key_weight, "encoder.layer.%d.attention.self.key.weight", l);
        EXPECT_TENSOR(lw->key_bias, "encoder.layer.%d.attention.self.key.bias", l);
        EXPECT_TENSOR(lw->value_weight, "encoder.layer.%d.attention.self.value.weight", l);
        EXPECT_TENSOR(lw->value_bias, "encoder.layer.%d.attention.self.value.bias", l);
        EXPECT_TENSOR(lw->attention_output_weight, "encoder.layer.%d.attention.output.dense.weight",
                      l);
        EXPECT_TENSOR(lw->attention_output_bias, "encoder.layer.%d.attention.output.dense.bias", l);
        EXPECT_TENSOR(lw->attention_norm_weight, "encoder.layer.%d.attention.output.LayerNorm.%s",
                      l, nw);
        EXPECT_TENSOR(lw->attention_norm_bias, "encoder.layer.%d.attention.output.LayerNorm.%s", l,
                      nb);
        EXPECT_TENSOR(lw->intermediate_weight, "encoder.layer.%d.intermediate.dense.weight", l);
        EXPECT_TENSOR(lw->intermediate_bias, "encoder.layer.%d.intermediate.dense.bias", l);
        EXPECT_TENSOR(lw->output_weight, "encoder.layer.%d.output.dense.weight", l);
        EXPECT_TENSOR(lw->output_bias, "encoder.layer.%d.output.dense.bias", l);
        EXPECT_TENSOR(lw->output_norm_weight, "encoder.layer.%d.output.LayerNorm.%s", l, nw);
        EXPECT_TENSOR(lw->output_norm_bias, "encoder.layer.%d.output.LayerNorm.%s", l, nb);
    }
#undef EXPECT_TENSOR
    for (int l = 0; l < LAYERS; l++) {
        const float *const *p = (const float *const *)&w->layers[l];
        for (size_t k = 0; k < sizeof(cx_bert_layer_weights) / sizeof(float *); k++)
            CHECK(p[k] != NULL && ((uintptr_t)p[k] % 4) == 0, "%s: layer %d field %zu aligned", what, l, k);
    }
    free(copy);
    cx_model_free(model);
    free(directory);
}

static void test_model_valid(void)
{
    fixture *f = malloc(sizeof *f);
    const char *dtypes[] = {"F32", "F16", "BF16"};
    for (int k = 0; k < 3; k++) {
        fixture_init(f, dtypes[k], "", 0);
        check_valid(f, "", 0, dtypes[k]);
        fixture_init(f, dtypes[k], "bert.", 0);
        check_valid(f, "bert.", 0, "bert. prefix");
    }
    fixture_init(f, "F32", "", 1);
    check_valid(f, "", 1, "legacy gamma/beta");
    fixture_init(f, "F32", "", 0);
    f->header_extra = 1; /* data at an odd file offset: F32 must be copied, not cast */
    check_valid(f, "", 0, "misaligned F32");
    fixture_init(f, "F16", "", 0); /* F16 with odd offsets is fine too */
    f->header_extra = 3;
    check_valid(f, "", 0, "F16 at odd offset");
    free(f);
}

static void test_half_conversion(void)
{
    /* Special F16 and BF16 values through a one-tensor-per-value fixture is heavy; instead load
     * a fixture whose word embeddings hold chosen bit patterns. */
    static const struct {
        uint16_t bits;
        float value;
    } halves[] = {
        {0x3C00, 1.0f},     {0xC000, -2.0f},          {0x7BFF, 65504.0f}, {0x0400, 6.103515625e-05f},
        {0x0001, 5.960464477539063e-08f}, {0x03FF, 6.097555160522461e-05f}, {0x8000, -0.0f},
        {0x3555, 0.333251953125f},
    };
    fixture *f = malloc(sizeof *f);
    fixture_init(f, "F16", "", 0);
    char *directory = make_folder(f, NULL);
    size_t size;
    unsigned char *image = fixture_image(f, &size);
    uint64_t header_length = 0;
    for (int k = 7; k >= 0; k--)
        header_length = (header_length << 8) | image[k];
    fixture_tensor *words = fixture_find(f, "embeddings.word_embeddings.weight");
    unsigned char *data = image + 8 + header_length + words->data_begin;
    size_t n = sizeof halves / sizeof halves[0];
    for (size_t k = 0; k < n; k++) {
        data[2 * k] = (unsigned char)halves[k].bits;
        data[2 * k + 1] = (unsigned char)(halves[k].bits >> 8);
    }
    data[2 * n] = 0x00, data[2 * n + 1] = 0x7C;     /* +inf */
    data[2 * n + 2] = 0x01, data[2 * n + 3] = 0x7E; /* nan */
    write_bytes(directory, "model.safetensors", image, size);
    cx_error err = {{0}};
    cx_model *model = cx_model_open(directory, NULL, &err);
    CHECK(model != NULL, "%s", err.message);
    if (model != NULL) {
        const float *got = cx_model_weights(model)->word_embeddings;
        for (size_t k = 0; k < n; k++)
            CHECK(got[k] == halves[k].value && signbit(got[k]) == signbit(halves[k].value),
                  "half 0x%04x -> %.9g, expected %.9g", halves[k].bits, got[k], halves[k].value);
        CHECK(isinf(got[n]) && got[n] > 0, "inf");
        CHECK(isnan(got[n + 1]), "nan");
    }
    cx_model_free(model);
    free(image);
    free(directory);

    /* BF16: the top half of an F32. */
    fixture_init(f, "BF16", "", 0);
    directory = make_folder(f, NULL);
    image = fixture_image(f, &size);
    header_length = 0;
    for (int k = 7; k >= 0; k--)
        header_length = (header_length << 8) | image[k];
    words = fixture_find(f, "embeddings.word_embeddings.weight");
    data = image + 8 + header_length + words->data_begin;
    static const uint16_t bf[] = {0x3F80, 0xC040, 0x0001, 0x7F80};
    static const float bf_values[] = {1.0f, -3.0f, 9.183549615799121e-41f, INFINITY};
    for (size_t k = 0; k < 4; k++) {
        data[2 * k] = (unsigned char)bf[k];
        data[2 * k + 1] = (unsigned char)(bf[k] >> 8);
    }
    write_bytes(directory, "model.safetensors", image, size);
    model = cx_model_open(directory, NULL, &err);
    CHECK(model != NULL, "%s", err.message);
    if (model != NULL)
        for (size_t k = 0; k < 4; k++)
            CHECK(cx_model_weights(model)->word_embeddings[k] == bf_values[k], "bf16 0x%04x", bf[k]);
    cx_model_free(model);
    free(image);
    free(directory);
    free(f);
}

static void test_model_folders(void)
{
    char path[600];
    snprintf(path, sizeof path, "%s/no-such-folder", temp_root);
    EXPECT_ERROR(path, CX_ERR_IO, "model folder not found (", "/no-such-folder): No such file");
    EXPECT_ERROR("", CX_ERR_ARGUMENT, "model folder", NULL);
    CHECK(cx_model_open(NULL, NULL, NULL) == NULL, "NULL everything");

    fixture *f = malloc(sizeof *f);
    fixture_init(f, "F32", "", 0);
    char *directory = make_folder(f, NULL);
    snprintf(path, sizeof path, "%s/config.json", directory);
    EXPECT_ERROR(path, CX_ERR_IO, "model folder not found (", "Not a directory");

    /* Missing files name themselves. */
    unlink(path);
    EXPECT_ERROR(directory, CX_ERR_IO, "model file not found (", "/config.json): No such file");
    write_text(directory, "config.json", TINY_CONFIG);
    snprintf(path, sizeof path, "%s/vocab.txt", directory);
    unlink(path);
    EXPECT_ERROR(directory, CX_ERR_IO, "model file not found (", "/vocab.txt)");
    write_text(directory, "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n");
    snprintf(path, sizeof path, "%s/model.safetensors", directory);
    unlink(path);
    EXPECT_ERROR(directory, CX_ERR_IO, "model file not found (", "/model.safetensors)");
    mkdir(path, 0700);
    EXPECT_ERROR(directory, CX_ERR_IO, "/model.safetensors): not a regular file", NULL);
    rmdir(path);
    snprintf(path, sizeof path, "%s/config.json", directory);
    unlink(path);
    mkdir(path, 0700);
    EXPECT_ERROR(directory, CX_ERR_IO, "/config.json): not a regular file", NULL);
    rmdir(path);
    free(directory);

    /* A trailing slash on the folder is fine. */
    directory = make_folder(f, NULL);
    char slashed[600];
    snprintf(slashed, sizeof slashed, "%s/", directory);
    cx_error err = {{0}};
    cx_model *model = cx_model_open(slashed, NULL, &err);
    CHECK(model != NULL, "%s", err.message);
    if (model != NULL) {
        snprintf(path, sizeof path, "%s/vocab.txt", directory);
        CHECK(strcmp(cx_model_vocab_path(model), path) == 0, "%s", cx_model_vocab_path(model));
    }
    cx_model_free(model);
    free(directory);
    free(f);
}

/* Builds TINY_CONFIG with one key replaced (or removed when `value` is NULL). */
static void config_with(char *out, size_t size, const char *key, const char *value)
{
    static const char *const keys[] = {"hidden_act", "hidden_size", "intermediate_size",
                                       "layer_norm_eps", "max_position_embeddings",
                                       "num_attention_heads", "num_hidden_layers",
                                       "type_vocab_size", "vocab_size", "position_embedding_type"};
    static const char *const values[] = {"\"gelu\"", "8", "16", "1e-12", "16", "2", "2", "2",
                                         "12", "\"absolute\""};
    size_t used = (size_t)snprintf(out, size, "{");
    for (int k = 0; k < 10; k++) {
        const char *v = values[k];
        if (strcmp(keys[k], key) == 0) {
            if (value == NULL)
                continue;
            v = value;
        }
        used += (size_t)snprintf(out + used, size - used, "%s\"%s\": %s", used > 1 ? ", " : "",
                                 keys[k], v);
    }
    snprintf(out + used, size - used, "}");
}

static void test_model_configs(void)
{
    fixture *f = malloc(sizeof *f);
    fixture_init(f, "F32", "", 0);
    char config[1024];
    static const struct {
        const char *key, *value;
        cx_status status;
        const char *part;
    } cases[] = {
        {"hidden_size", NULL, CX_ERR_MODEL, "(config.json): hidden_size is missing"},
        {"hidden_size", "\"8\"", CX_ERR_MODEL, "(config.json): hidden_size must be an integer"},
        {"hidden_size", "8.5", CX_ERR_MODEL, "hidden_size must be an integer"},
        {"hidden_size", "0", CX_ERR_MODEL, "hidden_size is 0, expected 1 to 65536"},
        {"hidden_size", "-8", CX_ERR_MODEL, "hidden_size is -8"},
        {"hidden_size", "1000000000000", CX_ERR_MODEL, "hidden_size is 1000000000000"},
        {"num_attention_heads", "3", CX_ERR_MODEL,
         "hidden_size 8 is not a multiple of num_attention_heads 3"},
        {"num_hidden_layers", "0", CX_ERR_MODEL, "num_hidden_layers is 0"},
        {"vocab_size", "99999999999", CX_ERR_MODEL, "vocab_size is 99999999999"},
        {"intermediate_size", NULL, CX_ERR_MODEL, "intermediate_size is missing"},
        {"max_position_embeddings", "1", CX_ERR_MODEL, "leaves no room for [CLS] and [SEP]"},
        {"type_vocab_size", "0", CX_ERR_MODEL, "type_vocab_size is 0"},
        {"layer_norm_eps", "0", CX_ERR_MODEL, "layer_norm_eps must be a number between 0 and 1"},
        {"layer_norm_eps", "\"small\"", CX_ERR_MODEL, "layer_norm_eps"},
        {"hidden_act", "\"relu\"", CX_ERR_MODEL,
         "unsupported model (config.json): hidden_act is \"relu\", only \"gelu\""},
        {"position_embedding_type", "\"relative_key\"", CX_ERR_MODEL, "position_embedding_type"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        config_with(config, sizeof config, cases[k].key, cases[k].value);
        char *directory = make_folder(f, config);
        EXPECT_ERROR(directory, cases[k].status, cases[k].part, NULL);
        free(directory);
    }
    /* Syntax errors carry the file and byte offset. */
    char *directory = make_folder(f, "{\"hidden_size\": 8,}");
    EXPECT_ERROR(directory, CX_ERR_FORMAT, "invalid JSON (config.json): ", "at byte 18");
    free(directory);
    directory = make_folder(f, "[8]");
    EXPECT_ERROR(directory, CX_ERR_FORMAT, "invalid model config (config.json): expected a JSON object", NULL);
    free(directory);
    directory = make_folder(f, "");
    EXPECT_ERROR(directory, CX_ERR_FORMAT, "invalid JSON (config.json): unexpected end of input at byte 0", NULL);
    free(directory);

    /* Optional keys take their defaults; null counts as absent. */
    config_with(config, sizeof config, "type_vocab_size", NULL);
    directory = make_folder(f, config);
    cx_error err = {{0}};
    cx_model *model = cx_model_open(directory, NULL, &err);
    CHECK(model != NULL && cx_model_config(model)->type_vocab_size == 2, "%s", err.message);
    cx_model_free(model);
    free(directory);
    config_with(config, sizeof config, "layer_norm_eps", "null");
    directory = make_folder(f, config);
    model = cx_model_open(directory, NULL, &err);
    CHECK(model != NULL && cx_model_config(model)->layer_norm_eps == 1e-12, "%s", err.message);
    cx_model_free(model);
    free(directory);
    config_with(config, sizeof config, "layer_norm_eps", "1e-5");
    directory = make_folder(f, config);
    model = cx_model_open(directory, NULL, &err);
    CHECK(model != NULL && cx_model_config(model)->layer_norm_eps == 1e-5, "%s", err.message);
    cx_model_free(model);
    free(directory);

    /* sentence_bert_config.json and tokenizer_config.json. */
    static const struct {
        const char *sentence, *tokenizer;
        int64_t max_seq_length;
        int lower;
        const char *error;
    } optional[] = {
        {"{\"max_seq_length\": 8, \"do_lower_case\": false}", "{\"do_lower_case\": false}", 8, 0, NULL},
        {"{\"max_seq_length\": 1000}", "{\"do_lower_case\": true}", P, 1, NULL}, /* clamped */
        {"{\"max_seq_length\": null}", "{}", P, 1, NULL},
        {"{}", "{\"do_lower_case\": null}", P, 1, NULL},
        {"{\"max_seq_length\": 1}", NULL, 0, 0, "(sentence_bert_config.json): max_seq_length must be"},
        {"{\"max_seq_length\": \"128\"}", NULL, 0, 0, "max_seq_length must be an integer"},
        {"{\"max_seq_length\": 12.5}", NULL, 0, 0, "max_seq_length must be an integer"},
        {"{\"max_seq_length\": 12", NULL, 0, 0, "invalid JSON (sentence_bert_config.json): "},
        {NULL, "{\"do_lower_case\": \"yes\"}", 0, 0, "(tokenizer_config.json): do_lower_case must be true or false"},
        {NULL, "{\"do_lower_case\": 1}", 0, 0, "do_lower_case must be true or false"},
        {NULL, "nope", 0, 0, "invalid JSON (tokenizer_config.json): "},
    };
    for (size_t k = 0; k < sizeof optional / sizeof optional[0]; k++) {
        directory = make_folder(f, NULL);
        if (optional[k].sentence != NULL)
            write_text(directory, "sentence_bert_config.json", optional[k].sentence);
        if (optional[k].tokenizer != NULL)
            write_text(directory, "tokenizer_config.json", optional[k].tokenizer);
        if (optional[k].error != NULL) {
            EXPECT_ERROR(directory, optional[k].error[0] == 'i' ? CX_ERR_FORMAT : CX_ERR_MODEL,
                         optional[k].error, NULL);
        } else {
            model = cx_model_open(directory, NULL, &err);
            CHECK(model != NULL, "optional case %zu: %s", k, err.message);
            if (model != NULL) {
                CHECK(cx_model_config(model)->max_seq_length == optional[k].max_seq_length,
                      "case %zu: max_seq_length %lld", k,
                      (long long)cx_model_config(model)->max_seq_length);
                CHECK(cx_model_config(model)->do_lower_case == optional[k].lower,
                      "case %zu: do_lower_case", k);
            }
            cx_model_free(model);
        }
        free(directory);
    }
    free(f);
}

/* Writes raw bytes as model.safetensors into a valid folder and expects an error. */
static void expect_safetensors_error(const void *bytes, size_t size, cx_status status,
                                     const char *part1, const char *part2, int line)
{
    char *directory = make_folder(NULL, NULL);
    write_bytes(directory, "model.safetensors", bytes, size);
    expect_open_error(directory, status, part1, part2, line);
    free(directory);
}

static void test_safetensors_broken_files(void)
{
    expect_safetensors_error("", 0, CX_ERR_FORMAT,
                             "truncated safetensors file (model.safetensors): 0 bytes", NULL, __LINE__);
    expect_safetensors_error("\x10\0\0", 3, CX_ERR_FORMAT, "3 bytes, too short", NULL, __LINE__);
    expect_safetensors_error("\0\0\0\0\0\0\0\0{}", 10, CX_ERR_FORMAT,
                             "bad safetensors header (model.safetensors): header length 0", NULL,
                             __LINE__);
    expect_safetensors_error("\x10\0\0\0\0\0\0\0{}", 10, CX_ERR_FORMAT,
                             "truncated safetensors file (model.safetensors): header length 16 but "
                             "only 2 bytes follow it",
                             NULL, __LINE__);
    expect_safetensors_error("\xff\xff\xff\xff\xff\xff\xff\xff{}", 10, CX_ERR_FORMAT,
                             "header length 18446744073709551615, expected 1 to 100000000", NULL,
                             __LINE__);
    expect_safetensors_error("\x00\xe2\xf5\x05\0\0\0\0{}", 10, CX_ERR_FORMAT,
                             "header length 100000256, expected 1 to 100000000", NULL, __LINE__);
    expect_safetensors_error("\x08\0\0\0\0\0\0\0garbage!", 16, CX_ERR_FORMAT,
                             "invalid JSON (model.safetensors header): ", "at byte 0", __LINE__);
    expect_safetensors_error("\x08\0\0\0\0\0\0\0[1,2]   ", 16, CX_ERR_FORMAT,
                             "bad safetensors header (model.safetensors): expected a JSON object",
                             NULL, __LINE__);
    expect_safetensors_error("\x08\0\0\0\0\0\0\0{}      ", 16, CX_ERR_MODEL,
                             "tensor is missing (model.safetensors: embeddings.word_embeddings.weight)",
                             NULL, __LINE__);
}

/* Mutates one tensor of a valid fixture and expects an error naming it. */
typedef void (*mutation)(fixture *f, fixture_tensor *t);

static void expect_tensor_error(const char *name, mutation mutate, cx_status status,
                                const char *part, int line)
{
    fixture *f = malloc(sizeof *f);
    fixture_init(f, "F32", "", 0);
    mutate(f, fixture_find(f, name));
    char *directory = make_folder(f, NULL);
    char where[200];
    snprintf(where, sizeof where, "(model.safetensors: %s): ", name);
    expect_open_error(directory, status, where, part, line);
    free(directory);
    free(f);
}

static void omit(fixture *f, fixture_tensor *t) { t->omit = 1; }
static void shape_wrong(fixture *f, fixture_tensor *t)
{
    /* Lies consistently (offsets sized for the wrong shape): the shape check must catch it. */
    t->dims[1] = 9;
    t->end = t->begin + 8 * 9 * 4;
    if (t->end > f->data_size) /* keep inside the file */
        t->begin -= 32, t->end -= 32;
}
static void shape_rank(fixture *f, fixture_tensor *t) { t->rank = 3, t->dims[2] = 1; }
static void shape_flat(fixture *f, fixture_tensor *t) { t->rank = 1, t->dims[0] = 64, t->end = t->begin + 256; }
static void dtype_i64(fixture *f, fixture_tensor *t) { t->dtype = "I64"; }
static void dtype_f64(fixture *f, fixture_tensor *t) { t->dtype = "F64"; }
static void dtype_lower(fixture *f, fixture_tensor *t) { t->dtype = "f32"; }
static void beyond_data(fixture *f, fixture_tensor *t)
{
    t->begin = f->data_size - 16;
    t->end = t->begin + 256;
}
static void far_beyond(fixture *f, fixture_tensor *t) { t->begin = 1ll << 62, t->end = (1ll << 62) + 256; }
static void reversed(fixture *f, fixture_tensor *t)
{
    int64_t b = t->begin;
    t->begin = t->end, t->end = b;
}
static void overlap_short(fixture *f, fixture_tensor *t) { t->end -= 4; }
static void overlap_long(fixture *f, fixture_tensor *t) { t->end += 4; }
static const char *raw_entry;
static void set_raw_entry(fixture *f, fixture_tensor *t) { t->entry = raw_entry; }

static void test_safetensors_lies(void)
{
    const char *query = "encoder.layer.1.attention.self.query.weight";
    const char *bias = "encoder.layer.0.intermediate.dense.bias";
    expect_tensor_error(query, omit, CX_ERR_MODEL, "not in the header", __LINE__);
    expect_tensor_error("encoder.layer.1.output.LayerNorm.bias", omit, CX_ERR_MODEL, "not in the header", __LINE__);
    expect_tensor_error(query, shape_wrong, CX_ERR_MODEL, "expected [8, 8], found [8, 9]", __LINE__);
    expect_tensor_error(query, shape_rank, CX_ERR_MODEL, "expected [8, 8], found [8, 8, 1]", __LINE__);
    expect_tensor_error(query, shape_flat, CX_ERR_MODEL, "expected [8, 8], found [64]", __LINE__);
    expect_tensor_error(query, dtype_i64, CX_ERR_MODEL, "I64, expected F32, F16 or BF16", __LINE__);
    expect_tensor_error(bias, dtype_f64, CX_ERR_MODEL, "F64", __LINE__);
    expect_tensor_error(bias, dtype_lower, CX_ERR_MODEL, "unsupported dtype", __LINE__);
    expect_tensor_error(query, beyond_data, CX_ERR_FORMAT, "tensor data lies outside the file", __LINE__);
    expect_tensor_error(query, far_beyond, CX_ERR_FORMAT, "data_offsets [4611686018427387904, 4611686018427388160]", __LINE__);
    expect_tensor_error(query, reversed, CX_ERR_FORMAT, "tensor data lies outside the file", __LINE__);
    expect_tensor_error(query, overlap_short, CX_ERR_FORMAT, "tensor size does not match its shape", __LINE__);
    expect_tensor_error(query, overlap_long, CX_ERR_FORMAT, "[8, 8] F32 needs 256 bytes", __LINE__);

    /* Malformed entries: the raw JSON written for the query weight. */
    static const struct {
        const char *entry;
        cx_status status;
        const char *part;
    } entries[] = {
        {"[1, 2, 3]", CX_ERR_FORMAT, "bad tensor entry"},
        {"{\"shape\": [8, 8], \"data_offsets\": [0, 256]}", CX_ERR_FORMAT, "bad tensor entry"},
        {"{\"dtype\": 32, \"shape\": [8, 8], \"data_offsets\": [0, 256]}", CX_ERR_FORMAT,
         "bad tensor entry"},
        {"{\"dtype\": \"F32\", \"shape\": [-8, -8], \"data_offsets\": [0, 256]}", CX_ERR_FORMAT,
         "bad tensor entry"},
        {"{\"dtype\": \"F32\", \"shape\": [8.5, 8], \"data_offsets\": [0, 256]}", CX_ERR_FORMAT,
         "bad tensor entry"},
        {"{\"dtype\": \"F32\", \"shape\": [8, 8], \"data_offsets\": [0, 256, 512]}",
         CX_ERR_FORMAT, "bad tensor entry"},
        {"{\"dtype\": \"F32\", \"shape\": [8, 8], \"data_offsets\": [-256, 0]}", CX_ERR_FORMAT,
         "bad tensor entry"},
        {"{\"dtype\": \"F32\", \"shape\": [8, 8], \"data_offsets\": [0, 1e300]}", CX_ERR_FORMAT,
         "bad tensor entry"},
        {"{\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1,8,8], \"data_offsets\": [0, 256]}",
         CX_ERR_FORMAT, "bad tensor entry"},
        {"{\"dtype\": \"F32\", \"shape\": [4611686018427387904, 8], \"data_offsets\": [0, 256]}",
         CX_ERR_MODEL, "wrong shape"},
    };
    for (size_t k = 0; k < sizeof entries / sizeof entries[0]; k++) {
        raw_entry = entries[k].entry;
        expect_tensor_error(query, set_raw_entry, entries[k].status, entries[k].part, __LINE__);
    }

    /* The data area cut short: the last tensors lie beyond the end of the file. */
    fixture *f = malloc(sizeof *f);
    fixture_init(f, "F32", "", 0);
    size_t size;
    unsigned char *image = fixture_image(f, &size);
    char *directory = make_folder(NULL, NULL);
    write_bytes(directory, "model.safetensors", image, size - 300); /* past the unused pooler */
    EXPECT_ERROR(directory, CX_ERR_FORMAT, "tensor data lies outside the file (model.safetensors: ",
                 "but the data area holds");
    free(directory);
    free(image);
    free(f);
}

/* Random corruptions of a valid tiny file: every outcome is a model or a clean error. */
static void test_safetensors_fuzz(void)
{
    fixture *f = malloc(sizeof *f);
    fixture_init(f, "F16", "bert.", 0);
    size_t size;
    unsigned char *image = fixture_image(f, &size);
    uint64_t header_length = 0;
    for (int k = 7; k >= 0; k--)
        header_length = (header_length << 8) | image[k];
    char *directory = make_folder(NULL, NULL);
    int opened = 0, rounds = 300;
    unsigned char *copy = malloc(size);
    for (int round = 0; round < rounds; round++) {
        memcpy(copy, image, size);
        size_t cut = size;
        switch (rng() % 4) {
        case 0: /* flip header bytes */
            for (int e = 0; e < 3; e++)
                copy[8 + rng() % header_length] = (unsigned char)("0123456789[]{},:\" -.e"[rng() % 21]);
            break;
        case 1: /* flip any byte, the length included */
            copy[rng() % size] ^= (unsigned char)(1u << (rng() % 8));
            break;
        case 2: /* truncate */
            cut = rng() % size;
            break;
        default: /* change one digit of the header to move offsets and shapes */
            for (size_t k = 8 + rng() % header_length; k < 8 + header_length; k++)
                if (copy[k] >= '0' && copy[k] <= '9') {
                    copy[k] = (unsigned char)('0' + rng() % 10);
                    break;
                }
            break;
        }
        write_bytes(directory, "model.safetensors", copy, cut);
        cx_error err = {{0}};
        cx_status status = CX_OK;
        cx_model *model = cx_model_open(directory, &status, &err);
        if (model != NULL) {
            opened++;
            /* Touch every weight: a wrong pointer would fault here (or under ASan). */
            const cx_bert_weights *w = cx_model_weights(model);
            volatile float sum = 0;
            for (int64_t e = 0; e < V * H; e++)
                sum += w->word_embeddings[e];
            for (int64_t e = 0; e < I * H; e++)
                sum += w->layers[LAYERS - 1].intermediate_weight[e];
            (void)sum;
        } else {
            CHECK(status != CX_OK && err.message[0] != '\0', "error without message");
        }
        cx_model_free(model);
    }
    printf("safetensors fuzz: %d of %d corruptions still open\n", opened, rounds);
    free(copy);
    free(directory);
    free(image);
    free(f);
}

/* ------------------------------------------------------------------------------------------ */
/* The real model */

static void test_real_model(const char *directory)
{
    if (directory == NULL) {
        printf("skip: real model (pass its folder or set COARCH_MODEL_DIR)\n");
        return;
    }
    cx_error err = {{0}};
    cx_status status = CX_ERR_BACKEND;
    cx_model *model = cx_model_open(directory, &status, &err);
    CHECK(model != NULL && status == CX_OK, "%s", err.message);
    if (model == NULL)
        return;
    const cx_bert_config *c = cx_model_config(model);
    CHECK(c->vocab_size == 30522 && c->hidden_size == 384 && c->num_layers == 6 &&
              c->num_heads == 12 && c->intermediate_size == 1536 &&
              c->max_position_embeddings == 512 && c->type_vocab_size == 2 &&
              c->layer_norm_eps == 1e-12,
          "real config");
    CHECK(c->max_seq_length == 256, "max_seq_length %lld", (long long)c->max_seq_length);
    CHECK(c->do_lower_case == 1, "do_lower_case");

    /* Compare tensors with the bytes in the file, located by an independent header parse. */
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", directory);
    FILE *file = fopen(path, "rb");
    CHECK(file != NULL, "open %s", path);
    if (file != NULL) {
        unsigned char length_bytes[8];
        CHECK(fread(length_bytes, 1, 8, file) == 8, "read length");
        uint64_t header_length = 0;
        for (int k = 7; k >= 0; k--)
            header_length = (header_length << 8) | length_bytes[k];
        char *header = malloc(header_length);
        CHECK(fread(header, 1, header_length, file) == header_length, "read header");
        cx_json_document *doc = cx_json_parse(header, header_length, "real header", &err);
        CHECK(doc != NULL, "%s", err.message);
        const cx_bert_weights *w = cx_model_weights(model);
        const struct {
            const char *name;
            const float *loaded;
        } probes[] = {
            {"embeddings.word_embeddings.weight", w->word_embeddings},
            {"embeddings.position_embeddings.weight", w->position_embeddings},
            {"embeddings.LayerNorm.bias", w->embedding_norm_bias},
            {"encoder.layer.0.attention.self.query.weight", w->layers[0].query_weight},
            {"encoder.layer.5.output.LayerNorm.weight", w->layers[5].output_norm_weight},
            {"encoder.layer.3.intermediate.dense.weight", w->layers[3].intermediate_weight},
        };
        for (size_t k = 0; doc != NULL && k < sizeof probes / sizeof probes[0]; k++) {
            const cx_json_value *offsets =
                cx_json_get(cx_json_get(cx_json_root(doc), probes[k].name), "data_offsets");
            int64_t begin = -1, end = -1;
            CHECK(cx_json_as_int64(cx_json_array_item(offsets, 0), &begin) &&
                      cx_json_as_int64(cx_json_array_item(offsets, 1), &end),
                  "%s offsets", probes[k].name);
            size_t bytes = (size_t)(end - begin);
            char *expected = malloc(bytes);
            fseek(file, (long)(8 + header_length + (uint64_t)begin), SEEK_SET);
            CHECK(fread(expected, 1, bytes, file) == bytes, "read %s", probes[k].name);
            CHECK(memcmp(expected, probes[k].loaded, bytes) == 0, "%s differs from the file",
                  probes[k].name);
            free(expected);
        }
        cx_json_free(doc);
        free(header);
        fclose(file);
    }
    cx_model_free(model);

    /* A copy of the real config with a lying shape fails with the promised message. */
    char *folder = malloc(512);
    snprintf(folder, 512, "%s/real-config", temp_root);
    mkdir(folder, 0700);
    char config_path[1024];
    snprintf(config_path, sizeof config_path, "%s/config.json", directory);
    FILE *in = fopen(config_path, "rb");
    char config[4096] = "";
    size_t got = in != NULL ? fread(config, 1, sizeof config - 1, in) : 0;
    config[got] = '\0';
    if (in != NULL)
        fclose(in);
    write_text(folder, "config.json", config);
    write_text(folder, "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n");
    fixture *f = malloc(sizeof *f);
    memset(f, 0, sizeof *f);
    fixture_add(f, "embeddings.word_embeddings.weight", "F16", 2, 30522, 384);
    fixture_add(f, "embeddings.position_embeddings.weight", "F16", 2, 512, 384);
    fixture_add(f, "embeddings.token_type_embeddings.weight", "F16", 2, 2, 384);
    fixture_add(f, "embeddings.LayerNorm.weight", "F16", 1, 384, 0);
    fixture_add(f, "embeddings.LayerNorm.bias", "F16", 1, 384, 0);
    fixture_add(f, "encoder.layer.0.attention.self.query.weight", "F16", 2, 384, 385);
    size_t size;
    unsigned char *image = fixture_image(f, &size);
    write_bytes(folder, "model.safetensors", image, size);
    EXPECT_ERROR(folder, CX_ERR_MODEL,
                 "tensor has the wrong shape (model.safetensors: "
                 "encoder.layer.0.attention.self.query.weight): expected [384, 384], found [384, 385]",
                 NULL);
    free(image);
    free(f);
    free(folder);
}

static void remove_tree(const char *path)
{
    char command[600];
    snprintf(command, sizeof command, "rm -rf '%s'", path);
    if (system(command) != 0)
        fprintf(stderr, "could not remove %s\n", path);
}

int main(int argc, char **argv)
{
    const char *model_dir = argc > 1 ? argv[1] : getenv("COARCH_MODEL_DIR");
    const char *tmp = getenv("TMPDIR");
    snprintf(temp_root, sizeof temp_root, "%s/coarch-test-model-XXXXXX", tmp ? tmp : "/tmp");
    if (mkdtemp(temp_root) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    test_json_valid();
    test_json_invalid();
    test_json_locale();
    test_json_robustness();
    test_half_conversion();
    test_model_valid();
    test_model_folders();
    test_model_configs();
    test_safetensors_broken_files();
    test_safetensors_lies();
    test_safetensors_fuzz();
    test_real_model(model_dir);
    remove_tree(temp_root);
    printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
