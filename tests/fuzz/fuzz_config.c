/* fuzz_config.c: libFuzzer harness for the JSON reader (cx_json) and the model folder's text
 * files: config.json, sentence_bert_config.json, tokenizer_config.json and vocab.txt.
 *
 * Input: one selector byte, then the file's bytes. Selector % 4 picks the file that the rest
 * replaces in a folder holding the tiny valid model (fuzz_common.h): 0 config.json,
 * 1 sentence_bert_config.json, 2 tokenizer_config.json (cx_model_open), 3 vocab.txt
 * (cx_tokenizer_open, then a few encodings). Whatever the selector, the bytes are first parsed
 * with cx_json_parse directly and the document walked: every member found by cx_json_get is the
 * one at its index, every accessor agrees with cx_json_type_of. Seeds: tests/fuzz/corpus/config,
 * dictionary tests/fuzz/json.dict. */
#include <stdint.h>
#include <string.h>

#include "cx_json.h"
#include "cx_model.h"
#include "cx_tokenizer.h"
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const targets[] = {"config.json", "sentence_bert_config.json",
                                      "tokenizer_config.json", "vocab.txt"};

static void write_valid_folder(void)
{
    fuzz_write("config.json", TINY_CONFIG, strlen(TINY_CONFIG));
    fuzz_write("vocab.txt", TINY_VOCAB, strlen(TINY_VOCAB));
    fuzz_remove("sentence_bert_config.json");
    fuzz_remove("tokenizer_config.json");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_make_dir();
    size_t size;
    unsigned char *image = tiny_safetensors(&size);
    fuzz_write("model.safetensors", image, size);
    free(image);
    write_valid_folder();
    /* The folder itself must open, or every input would only test the same error. */
    cx_error err;
    cx_model *model = cx_model_open(fuzz_dir, NULL, &err);
    FUZZ_REQUIRE(model != NULL, "the tiny model does not open: %s", err.message);
    cx_model_free(model);
    return 0;
}

static void walk(const cx_json_value *value, int depth)
{
    FUZZ_REQUIRE(depth <= 65, "a document deeper than the parser's limit");
    cx_json_type type = cx_json_type_of(value);
    int flag;
    double number;
    int64_t integer;
    const char *text;
    FUZZ_REQUIRE(cx_json_as_bool(value, &flag) == (type == CX_JSON_BOOL), "as_bool");
    FUZZ_REQUIRE(cx_json_as_double(value, &number) == (type == CX_JSON_NUMBER), "as_double");
    FUZZ_REQUIRE(cx_json_as_string(value, &text) == (type == CX_JSON_STRING), "as_string");
    if (type == CX_JSON_STRING)
        FUZZ_REQUIRE(text != NULL && strlen(text) < (1u << 30), "string");
    if (cx_json_as_int64(value, &integer))
        FUZZ_REQUIRE(type == CX_JSON_NUMBER && (double)integer == number,
                     "integer %lld is not the number %.17g", (long long)integer, number);
    size_t items = cx_json_array_size(value);
    FUZZ_REQUIRE(type == CX_JSON_ARRAY || items == 0, "array size of a non-array");
    for (size_t i = 0; i < items; i++)
        walk(cx_json_array_item(value, i), depth + 1);
    FUZZ_REQUIRE(cx_json_array_item(value, items) == NULL, "item past the end");
    size_t members = cx_json_object_size(value);
    FUZZ_REQUIRE(type == CX_JSON_OBJECT || members == 0, "object size of a non-object");
    for (size_t i = 0; i < members; i++) {
        const char *key = cx_json_object_key(value, i);
        const cx_json_value *member = cx_json_object_value(value, i);
        FUZZ_REQUIRE(key != NULL && member != NULL, "member %zu", i);
        /* Keys are unique (duplicates are rejected) and have no NUL, so lookup finds this one. */
        FUZZ_REQUIRE(cx_json_get(value, key) == member, "cx_json_get(\"%.40s\")", key);
        walk(member, depth + 1);
    }
    FUZZ_REQUIRE(cx_json_object_key(value, members) == NULL, "key past the end");
}

static void check_json(const uint8_t *data, size_t size)
{
    cx_error err;
    memset(&err, 0, sizeof err);
    cx_json_document *document = cx_json_parse((const char *)data, size, "fuzz.json", &err);
    if (document == NULL) {
        FUZZ_REQUIRE(strncmp(err.message, "invalid JSON (fuzz.json): ", 26) == 0,
                     "unexpected message: %s", err.message);
        return;
    }
    walk(cx_json_root(document), 1);
    cx_json_free(document);
}

static void check_tokenizer(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/vocab.txt", fuzz_dir);
    for (int lowercase = 0; lowercase < 2; lowercase++) {
        cx_error err;
        memset(&err, 0, sizeof err);
        cx_status status = CX_OK;
        cx_tokenizer *t = cx_tokenizer_open(path, lowercase, &status, &err);
        if (t == NULL) {
            FUZZ_REQUIRE(status < 0 && err.message[0] != '\0', "failure without a message");
            return;
        }
        int64_t vocab = cx_tokenizer_vocab_size(t);
        FUZZ_REQUIRE(vocab >= 1, "vocabulary of %lld", (long long)vocab);
        static const char *const texts[] = {"the xs [MASK] héllo, wörld! 中文 ##s",
                                            "[UNK][CLS][SEP][PAD]", ""};
        for (size_t k = 0; k < sizeof texts / sizeof *texts; k++) {
            int32_t ids[64];
            size_t length = strlen(texts[k]);
            int64_t n = cx_tokenizer_encode(t, texts[k], length, ids, 64, &err);
            FUZZ_REQUIRE(n >= 2 && n <= (int64_t)length + 2, "encode gave %lld", (long long)n);
            FUZZ_REQUIRE(n == cx_tokenizer_count(t, texts[k], length, &err), "count differs");
            for (int64_t i = 0; i < n; i++) {
                FUZZ_REQUIRE(ids[i] >= 0 && ids[i] < vocab, "id %d outside the vocabulary", ids[i]);
                FUZZ_REQUIRE(cx_tokenizer_id_to_token(t, ids[i]) != NULL, "id %d", ids[i]);
            }
        }
        cx_tokenizer_free(t);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int target = data[0] % 4;
    data++, size--;
    check_json(data, size);
    fuzz_write(targets[target], data, size);
    if (target == 3) {
        check_tokenizer();
    } else {
        cx_error err;
        memset(&err, 0, sizeof err);
        cx_status status = CX_OK;
        cx_model *model = cx_model_open(fuzz_dir, &status, &err);
        if (model == NULL) {
            FUZZ_REQUIRE(status < 0 && err.message[0] != '\0', "failure without a message");
        } else {
            const cx_bert_config *c = cx_model_config(model);
            FUZZ_REQUIRE(c->max_seq_length >= 2 && c->max_seq_length <= c->max_position_embeddings,
                         "max_seq_length %lld", (long long)c->max_seq_length);
            FUZZ_REQUIRE(c->hidden_size % c->num_heads == 0, "heads do not divide hidden");
            FUZZ_REQUIRE(c->layer_norm_eps > 0.0 && c->layer_norm_eps < 1.0, "eps");
            FUZZ_REQUIRE(c->do_lower_case == 0 || c->do_lower_case == 1, "do_lower_case %d",
                         c->do_lower_case);
            cx_model_free(model);
        }
    }
    write_valid_folder();
    return 0;
}
