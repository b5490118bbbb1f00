/* fuzz_common.h: shared by the fuzz harnesses: a private temp folder, file writing, and a tiny
 * valid BERT model (config.json, vocab.txt, model.safetensors) to mutate one file of.
 *
 * Header-only on purpose: each harness is one translation unit plus the engine files it drives,
 * built either with clang's libFuzzer (tests/c/Makefile `fuzz`) or with replay.c's main under gcc
 * (`check`/`asan` replay the seed corpora and every saved crash). Failures abort(), so both
 * libFuzzer and the replay driver report them with a stack trace. */
#ifndef COARCH_FUZZ_COMMON_H
#define COARCH_FUZZ_COMMON_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* An invariant the engine promises: abort with the reason (libFuzzer saves the input). */
#define FUZZ_REQUIRE(cond, ...)                                                                    \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz invariant broken at %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static char fuzz_dir[256];
static const char *const fuzz_dir_files[] = {"config.json", "sentence_bert_config.json",
                                             "tokenizer_config.json", "vocab.txt",
                                             "model.safetensors"};

static inline void fuzz_remove_dir(void)
{
    char path[512];
    for (size_t i = 0; i < sizeof fuzz_dir_files / sizeof *fuzz_dir_files; i++) {
        snprintf(path, sizeof path, "%s/%s", fuzz_dir, fuzz_dir_files[i]);
        unlink(path);
    }
    rmdir(fuzz_dir);
}

/* Creates the process's folder (in RAM when /dev/shm exists: a write per execution) and removes
 * it at exit. */
static inline const char *fuzz_make_dir(void)
{
    const char *base = getenv("TMPDIR");
    struct stat info;
    if (base == NULL || base[0] == '\0')
        base = stat("/dev/shm", &info) == 0 && S_ISDIR(info.st_mode) ? "/dev/shm" : "/tmp";
    snprintf(fuzz_dir, sizeof fuzz_dir, "%s/coarch-fuzz-XXXXXX", base);
    if (mkdtemp(fuzz_dir) == NULL) {
        perror(fuzz_dir);
        exit(2);
    }
    atexit(fuzz_remove_dir);
    return fuzz_dir;
}

/* Replaces fuzz_dir/name with exactly `size` bytes. */
static inline void fuzz_write(const char *name, const void *data, size_t size)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror(path);
        exit(2);
    }
    const char *bytes = data;
    while (size > 0) {
        ssize_t n = write(fd, bytes, size);
        if (n <= 0) {
            perror(path);
            exit(2);
        }
        bytes += n;
        size -= (size_t)n;
    }
    close(fd);
}

static inline void fuzz_remove(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir, name);
    unlink(path);
}

/* ---- the tiny model: H=4, 2 heads, I=8, P=4, T=2, 1 layer, V=8 ------------------------------ */

#define TINY_CONFIG                                                                                \
    "{\"hidden_act\": \"gelu\", \"hidden_size\": 4, \"intermediate_size\": 8,"                     \
    " \"layer_norm_eps\": 1e-12, \"max_position_embeddings\": 4, \"num_attention_heads\": 2,"      \
    " \"num_hidden_layers\": 1, \"type_vocab_size\": 2, \"vocab_size\": 8,"                        \
    " \"position_embedding_type\": \"absolute\"}"
#define TINY_VOCAB "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n##s\nx\n"

static const struct {
    const char *name;
    int64_t d0, d1; /* d1 = 0: rank 1 */
} tiny_tensors[] = {
    {"embeddings.word_embeddings.weight", 8, 4},
    {"embeddings.position_embeddings.weight", 4, 4},
    {"embeddings.token_type_embeddings.weight", 2, 4},
    {"embeddings.LayerNorm.weight", 4, 0},
    {"embeddings.LayerNorm.bias", 4, 0},
    {"encoder.layer.0.attention.self.query.weight", 4, 4},
    {"encoder.layer.0.attention.self.query.bias", 4, 0},
    {"encoder.layer.0.attention.self.key.weight", 4, 4},
    {"encoder.layer.0.attention.self.key.bias", 4, 0},
    {"encoder.layer.0.attention.self.value.weight", 4, 4},
    {"encoder.layer.0.attention.self.value.bias", 4, 0},
    {"encoder.layer.0.attention.output.dense.weight", 4, 4},
    {"encoder.layer.0.attention.output.dense.bias", 4, 0},
    {"encoder.layer.0.attention.output.LayerNorm.weight", 4, 0},
    {"encoder.layer.0.attention.output.LayerNorm.bias", 4, 0},
    {"encoder.layer.0.intermediate.dense.weight", 8, 4},
    {"encoder.layer.0.intermediate.dense.bias", 8, 0},
    {"encoder.layer.0.output.dense.weight", 4, 8},
    {"encoder.layer.0.output.dense.bias", 4, 0},
    {"encoder.layer.0.output.LayerNorm.weight", 4, 0},
    {"encoder.layer.0.output.LayerNorm.bias", 4, 0},
};
#define TINY_TENSOR_COUNT (sizeof tiny_tensors / sizeof *tiny_tensors)

/* The tiny model's safetensors image, F32, header padded to 8 bytes; malloc'ed. */
static inline unsigned char *tiny_safetensors(size_t *size)
{
    char header[8192];
    size_t used = (size_t)snprintf(header, sizeof header, "{");
    int64_t offset = 0;
    for (size_t k = 0; k < TINY_TENSOR_COUNT; k++) {
        int64_t count = tiny_tensors[k].d0 * (tiny_tensors[k].d1 ? tiny_tensors[k].d1 : 1);
        char shape[32];
        if (tiny_tensors[k].d1)
            snprintf(shape, sizeof shape, "%lld,%lld", (long long)tiny_tensors[k].d0,
                     (long long)tiny_tensors[k].d1);
        else
            snprintf(shape, sizeof shape, "%lld", (long long)tiny_tensors[k].d0);
        used += (size_t)snprintf(header + used, sizeof header - used,
                                 "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%s],\"data_offsets\":"
                                 "[%lld,%lld]}",
                                 k ? "," : "", tiny_tensors[k].name, shape, (long long)offset,
                                 (long long)(offset + 4 * count));
        offset += 4 * count;
    }
    used += (size_t)snprintf(header + used, sizeof header - used, "}");
    while (used % 8 != 0)
        header[used++] = ' ';
    *size = 8 + used + (size_t)offset;
    unsigned char *image = malloc(*size);
    if (image == NULL)
        abort();
    for (int k = 0; k < 8; k++)
        image[k] = (unsigned char)((uint64_t)used >> (8 * k));
    memcpy(image + 8, header, used);
    for (int64_t e = 0; e < offset / 4; e++) {
        float value = (float)(e % 13 - 6) / 8.0f;
        memcpy(image + 8 + used + 4 * e, &value, 4);
    }
    return image;
}

#endif
