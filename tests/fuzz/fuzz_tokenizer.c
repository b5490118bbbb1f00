/* fuzz_tokenizer.c: libFuzzer harness for the WordPiece tokenizer (cx_tokenizer_encode/count).
 *
 * Vocabulary: $COARCH_MODEL_DIR/vocab.txt (the real all-MiniLM-L6-v2 one; scripts/fuzz.sh and
 * tests/c/Makefile set it), else a small built-in one. Input: one option byte, then the text
 * (arbitrary bytes: invalid UTF-8, NULs, controls, combining marks, CJK). Option bits:
 *   bit 0      cased tokenizer instead of the lowercasing one;
 *   bit 1      repeat the text to about 4 KiB, so that short inputs make huge words and texts;
 *   bits 2..7  truncation limit 2 + (byte >> 2) for a second, truncated encoding.
 * Invariants (cx_tokenizer.h): count == untruncated encode length, 2 <= length <= bytes + 2,
 * [CLS] first and [SEP] last, every id in the vocabulary, and a truncated encoding is the first
 * max_tokens - 1 ids of the full one followed by [SEP]. Id buffers are malloc'ed to the exact
 * size promised, so ASan catches any write past it. Seeds: tests/fuzz/corpus/tokenizer. */
#include <stdint.h>
#include <string.h>

#include "cx_tokenizer.h"
#include "fuzz_common.h"

#define REPEAT_BYTES 4096

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static cx_tokenizer *tokenizers[2]; /* [0] lowercase, [1] cased */

static void free_tokenizers(void)
{
    cx_tokenizer_free(tokenizers[0]);
    cx_tokenizer_free(tokenizers[1]);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char path[512];
    const char *model = getenv("COARCH_MODEL_DIR");
    if (model != NULL && model[0] != '\0') {
        snprintf(path, sizeof path, "%s/vocab.txt", model);
    } else {
        fprintf(stderr, "fuzz_tokenizer: COARCH_MODEL_DIR not set, using a small vocabulary\n");
        fuzz_make_dir();
        static const char vocab[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n##s\nx\nab\n##c\n"
                                    "a\nb\nc\n##a\n##b\n,\n.\n\xe4\xb8\xad\n\xc3\xa9\n";
        fuzz_write("vocab.txt", vocab, sizeof vocab - 1);
        snprintf(path, sizeof path, "%s/vocab.txt", fuzz_dir);
    }
    for (int cased = 0; cased < 2; cased++) {
        cx_error err;
        tokenizers[cased] = cx_tokenizer_new(path, !cased, &err);
        if (tokenizers[cased] == NULL) {
            fprintf(stderr, "fuzz_tokenizer: %s\n", err.message);
            exit(2);
        }
    }
    atexit(free_tokenizers); /* so that valgrind sees every block freed */
    return 0;
}

static int32_t *ids_alloc(int64_t count)
{
    int32_t *ids = malloc((size_t)count * sizeof *ids);
    FUZZ_REQUIRE(ids != NULL, "out of memory for %lld ids", (long long)count);
    return ids;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t options = data[0];
    const cx_tokenizer *t = tokenizers[options & 1];
    const char *text = (const char *)data + 1;
    size_t length = size - 1;
    char *repeated = NULL;
    if ((options & 2) && length > 0) {
        size_t copies = REPEAT_BYTES / length + 1;
        repeated = malloc(copies * length);
        FUZZ_REQUIRE(repeated != NULL, "out of memory");
        for (size_t k = 0; k < copies; k++)
            memcpy(repeated + k * length, text, length);
        text = repeated;
        length *= copies;
    }

    cx_error err;
    memset(&err, 0, sizeof err);
    const int64_t count = cx_tokenizer_count(t, text, length, &err);
    FUZZ_REQUIRE(count >= 2 && count <= (int64_t)length + 2, "count %lld for %zu bytes: %s",
                 (long long)count, length, err.message);

    int32_t *ids = ids_alloc(count);
    int64_t n = cx_tokenizer_encode(t, text, length, ids, count, &err);
    FUZZ_REQUIRE(n == count, "encode gave %lld ids, count %lld", (long long)n, (long long)count);
    FUZZ_REQUIRE(ids[0] == cx_tokenizer_cls_id(t) && ids[n - 1] == cx_tokenizer_sep_id(t),
                 "not framed by [CLS] ... [SEP]");
    const int64_t vocab = cx_tokenizer_vocab_size(t);
    for (int64_t i = 0; i < n; i++)
        FUZZ_REQUIRE(ids[i] >= 0 && ids[i] < vocab, "id %d at %lld", ids[i], (long long)i);

    const int64_t limit = 2 + (options >> 2);
    if (limit < count) {
        int32_t *kept = ids_alloc(limit);
        int64_t m = cx_tokenizer_encode(t, text, length, kept, limit, &err);
        FUZZ_REQUIRE(m == limit, "truncated encode gave %lld, limit %lld", (long long)m,
                     (long long)limit);
        FUZZ_REQUIRE(memcmp(kept, ids, (size_t)(limit - 1) * sizeof *ids) == 0,
                     "truncation changed the kept prefix");
        FUZZ_REQUIRE(kept[limit - 1] == cx_tokenizer_sep_id(t), "truncation lost [SEP]");
        free(kept);
    }
    free(ids);
    free(repeated);
    return 0;
}
