/* test_tokenizer.c: plain C tests of cx_tokenizer (no Python).
 *
 * Usage: test_tokenizer [MODEL_DIR]
 * MODEL_DIR (or $COARCH_MODEL_DIR) is the real all-MiniLM-L6-v2 folder; without it the real-vocab
 * checks are skipped. Small vocabularies are written into a fresh temp dir. Exits 0 when every
 * check passes. Id-for-id parity with Hugging Face tokenizers is tests/test_core_tokenizer.py's. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cx_tokenizer.h"

#include "check.h"

static char temp_root[256];

static const char *write_vocab(const char *name, const char *content)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", temp_root, name);
    FILE *file = fopen(path, "wb");
    if (file == NULL) {
        perror(path);
        exit(2);
    }
    fputs(content, file);
    fclose(file);
    return path;
}

/* Encodes `text` untruncated and compares with `expected` (terminated by -1). */
static void expect_ids(const cx_tokenizer *t, const char *text, size_t length,
                       const int32_t *expected, const char *what)
{
    int32_t ids[64];
    cx_error err = {{0}};
    int64_t n = cx_tokenizer_encode(t, text, length, ids, 64, &err);
    int64_t want = 0;
    while (expected[want] >= 0)
        want++;
    CHECK(n == want, "%s: %lld ids, want %lld (%s)", what, (long long)n, (long long)want,
          err.message);
    CHECK(cx_tokenizer_count(t, text, length, &err) == want, "%s: count", what);
    for (int64_t i = 0; i < n && i < want; i++)
        CHECK(ids[i] == expected[i], "%s: id %lld is %d, want %d", what, (long long)i, ids[i],
              expected[i]);
}

static void test_errors(void)
{
    cx_error err = {{0}};
    cx_status status = CX_OK;
    char missing[512];
    snprintf(missing, sizeof missing, "%s/no/vocab.txt", temp_root);
    CHECK(cx_tokenizer_open(missing, 1, &status, &err) == NULL, "missing file");
    CHECK(status == CX_ERR_IO && strstr(err.message, missing) != NULL, "%d %s", status,
          err.message);
    CHECK(cx_tokenizer_open(temp_root, 1, &status, &err) == NULL, "directory");
    CHECK(status == CX_ERR_IO, "directory: %d %s", status, err.message);
    const char *path = write_vocab("no_unk.txt", "[PAD]\n[CLS]\n[SEP]\nhello\n");
    CHECK(cx_tokenizer_open(path, 1, &status, &err) == NULL, "no [UNK]");
    CHECK(status == CX_ERR_MODEL && strstr(err.message, "no [UNK] token") != NULL, "%s",
          err.message);
    path = write_vocab("empty.txt", "");
    CHECK(cx_tokenizer_new(path, 1, &err) == NULL && strstr(err.message, "empty") != NULL, "%s",
          err.message);
    cx_tokenizer_free(NULL);
}

static void test_small_vocabulary(void)
{
    cx_error err = {{0}};
    /* CRLF lines, trailing spaces trimmed, no [PAD]; "##aff" twice: the last id wins. */
    const char *path = write_vocab("small.txt", "[UNK]\r\n[CLS]\r\n[SEP] \r\nun\r\n##aff\r\n"
                                                "##able\r\naff\r\n##aff\r\n!\r\n");
    cx_tokenizer *t = cx_tokenizer_new(path, 1, &err);
    CHECK(t != NULL, "%s", err.message);
    if (t == NULL)
        return;
    CHECK(cx_tokenizer_vocab_size(t) == 9, "size");
    CHECK(cx_tokenizer_pad_id(t) == 0 && cx_tokenizer_unk_id(t) == 0, "pad/unk");
    CHECK(cx_tokenizer_cls_id(t) == 1 && cx_tokenizer_sep_id(t) == 2, "cls/sep");
    CHECK(strcmp(cx_tokenizer_id_to_token(t, 2), "[SEP]") == 0, "trimmed");
    CHECK(cx_tokenizer_id_to_token(t, 9) == NULL && cx_tokenizer_id_to_token(t, -1) == NULL,
          "range");
    expect_ids(t, "UnAffable!", 10, (const int32_t[]){1, 3, 7, 5, 8, 2, -1}, "pieces");
    expect_ids(t, "xyz unaff", 9, (const int32_t[]){1, 0, 3, 7, 2, -1}, "unknown word");
    expect_ids(t, "un\xff\xc0" "aff", 7, (const int32_t[]){1, 3, 7, 2, -1}, "invalid UTF-8");
    expect_ids(t, "un[SEP]!", 8, (const int32_t[]){1, 3, 2, 8, 2, -1}, "raw special token");
    expect_ids(t, "", 0, (const int32_t[]){1, 2, -1}, "empty");
    int32_t ids[4];
    CHECK(cx_tokenizer_encode(t, "un un un", 8, ids, 4, &err) == 4 && ids[3] == 2, "truncated");
    CHECK(cx_tokenizer_encode(t, "un", 2, ids, 1, &err) == CX_ERR_ARGUMENT, "max_tokens < 2");
    cx_tokenizer_free(t);
}

/* count_lines gives each '\n'-separated line what count gives it alone. */
static void test_count_lines(void)
{
    cx_error err = {{0}};
    const char *path = write_vocab("lines.txt", "[UNK]\n[CLS]\n[SEP]\nun\n##aff\n!\n");
    cx_tokenizer *t = cx_tokenizer_new(path, 1, &err);
    CHECK(t != NULL, "%s", err.message);
    if (t == NULL)
        return;
    const char text[] = "un\n\n  \nunaff! un[SEP]\nxyz\xff\n";
    size_t length = sizeof text - 1;
    int64_t lines = cx_tokenizer_line_count(text, length);
    CHECK(lines == 6, "%lld lines, want 6", (long long)lines);
    int64_t counts[6];
    CHECK(cx_tokenizer_count_lines(t, text, length, counts, 6, &err) == 6, "%s", err.message);
    size_t start = 0;
    for (int64_t i = 0; i < 6; i++) {
        const char *newline = memchr(text + start, '\n', length - start);
        size_t end = newline != NULL ? (size_t)(newline - text) : length;
        int64_t alone = cx_tokenizer_count(t, text + start, end - start, &err);
        CHECK(counts[i] == alone, "line %lld: %lld, alone %lld", (long long)i,
              (long long)counts[i], (long long)alone);
        start = end + 1;
    }
    CHECK(counts[0] == 3 && counts[1] == 2 && counts[2] == 2 && counts[5] == 2, "values");
    CHECK(cx_tokenizer_line_count(NULL, 0) == 1 && cx_tokenizer_line_count("", 0) == 1,
          "an empty text is one line");
    CHECK(cx_tokenizer_count_lines(t, NULL, 0, counts, 1, &err) == 1 && counts[0] == 2,
          "empty text");
    CHECK(cx_tokenizer_count_lines(t, text, length, counts, 5, &err) == CX_ERR_ARGUMENT &&
              strstr(err.message, "more than 5 lines") != NULL,
          "capacity: %s", err.message);
    CHECK(cx_tokenizer_count_lines(t, text, length, NULL, 6, &err) == CX_ERR_ARGUMENT,
          "no counts");
    CHECK(cx_tokenizer_count_lines(NULL, text, length, counts, 6, &err) == CX_ERR_ARGUMENT,
          "no tokenizer");
    cx_tokenizer_free(t);
}

typedef struct thread_job {
    const cx_tokenizer *tokenizer;
    const char *text;
    size_t length;
    int64_t count;
} thread_job;

static void *count_job(void *arg)
{
    thread_job *job = arg;
    cx_error err;
    for (int i = 0; i < 20; i++)
        job->count = cx_tokenizer_count(job->tokenizer, job->text, job->length, &err);
    return NULL;
}

static void test_real_vocabulary(const char *model_dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/vocab.txt", model_dir);
    cx_error err = {{0}};
    cx_tokenizer *t = cx_tokenizer_new(path, 1, &err);
    CHECK(t != NULL, "%s", err.message);
    if (t == NULL)
        return;
    CHECK(cx_tokenizer_vocab_size(t) == 30522, "size");
    const char *hello = "Hello, world! Na\xc3\xafve caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac";
    expect_ids(t, hello, strlen(hello),
               (const int32_t[]){101, 7592, 1010, 2088, 999, 15743, 7668, 1864, 1876, 102, -1},
               "real vocabulary");

    size_t big = 21 * 240000; /* about 5 MB, whole sentences */
    char *text = malloc(big);
    CHECK(text != NULL, "malloc");
    if (text == NULL)
        goto done;
    memset(text, 'a', big);
    CHECK(cx_tokenizer_count(t, text, big, &err) == 3, "one 5 MB word is one [UNK]");
    for (size_t i = 0; i < big; i++)
        text[i] = "the quick brown fox. "[i % 21];
    int64_t whole = cx_tokenizer_count(t, text, big, &err);
    CHECK(whole == (int64_t)(big / 21) * 5 + 2, "count %lld", (long long)whole);
    int32_t ids[256];
    CHECK(cx_tokenizer_encode(t, text, big, ids, 256, &err) == 256 && ids[255] == 102, "trunc");

    thread_job jobs[4];
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (thread_job){t, text, big / 10, 0};
        pthread_create(&threads[i], NULL, count_job, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        CHECK(jobs[i].count == cx_tokenizer_count(t, text, big / 10, &err), "thread %d", i);
    }
    free(text);
done:
    cx_tokenizer_free(t);
}

int main(int argc, char **argv)
{
    snprintf(temp_root, sizeof temp_root, "/tmp/cx_tokenizer_test_XXXXXX");
    if (mkdtemp(temp_root) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    test_errors();
    test_small_vocabulary();
    test_count_lines();
    const char *model_dir = argc > 1 ? argv[1] : getenv("COARCH_MODEL_DIR");
    if (model_dir != NULL && model_dir[0] != '\0')
        test_real_vocabulary(model_dir);
    else
        fprintf(stderr, "test_tokenizer: no MODEL_DIR, real-vocabulary checks skipped\n");
    char command[600];
    snprintf(command, sizeof command, "rm -rf '%s'", temp_root);
    if (system(command) != 0)
        fprintf(stderr, "test_tokenizer: could not remove %s\n", temp_root);
    printf("test_tokenizer: %d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
