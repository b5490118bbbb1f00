/* cx_model.c: opens a BERT model folder: config files, the mmap'ed safetensors file, and every
 * weight the encoder uses, each checked against the config and the file before use. */
#include "cx_model.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cx_config.h"
#include "cx_json.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "cx_model.c uses little-endian safetensors F32 data in place: big-endian is unsupported"
#endif

#define CONFIG_FILE_LIMIT ((int64_t)16 << 20)       /* bytes of one JSON config file */
#define SAFETENSORS_HEADER_LIMIT ((uint64_t)100000000) /* as in the reference implementation */
#define TENSOR_NAME_SIZE 256
#define SHAPE_TEXT_SIZE 96
#define MAX_RANK 8 /* dims shown in messages and accepted in a header entry */


struct cx_model {
    char *directory;               /* owned copy of the path given to cx_model_open */
    char *vocab_path;              /* owned: <directory>/vocab.txt */
    cx_bert_config config;         /* parsed and validated config files */
    cx_bert_weights weights;       /* pointers into `map` (F32 in place) or into `buffers` */
    cx_bert_layer_weights *layers; /* owned [num_layers]; weights.layers points here */
    void *map;                     /* owned read-only mapping of model.safetensors; NULL once no
                                      weight points into it */
    size_t map_size;               /* bytes mapped */
    float **buffers;               /* owned [buffer_count] tensors converted from F16/BF16 or
                                      copied from misaligned F32, each malloc'ed */
    size_t buffer_count, buffer_capacity;
};

/* State of one safetensors read; everything is borrowed from the model or the header. */
typedef struct tensor_loader {
    cx_model *model;
    const cx_json_value *header; /* root object of the safetensors JSON header */
    const unsigned char *data;   /* first byte of the data area, inside model->map */
    uint64_t data_size;          /* bytes in the data area: file size - 8 - header length */
    size_t in_place;             /* F32 tensors used straight from the mapping */
    cx_error *err;
} tensor_loader;

/* ------------------------------------------------------------------------------------------ */
/* Files */

/* "<directory>/<name>", malloc'ed; NULL when out of memory. */
static char *path_join(const char *directory, const char *name)
{
    size_t dir_length = strlen(directory);
    size_t name_length = strlen(name);
    int slash = dir_length > 0 && directory[dir_length - 1] != '/';
    char *path = malloc(dir_length + (size_t)slash + name_length + 1);
    if (path == NULL)
        return NULL;
    memcpy(path, directory, dir_length);
    if (slash)
        path[dir_length] = '/';
    memcpy(path + dir_length + slash, name, name_length + 1);
    return path;
}

static cx_status file_error(const char *path, int error_number, cx_error *err)
{
    if (error_number == ENOENT)
        return cx_error_set(err, CX_ERR_IO, "model file not found (%s): %s", path,
                            strerror(error_number));
    return cx_error_set(err, CX_ERR_IO, "cannot read model file (%s): %s", path,
                        strerror(error_number));
}

/* Opens `path` read-only and checks that it is a regular file, writing its size. Returns the
 * descriptor (the caller closes it) or -1 with *status set: CX_ERR_IO naming the path, or
 * CX_OK when `optional` and the file does not exist. */
static int open_model_file(const char *path, int optional, uint64_t *size, cx_status *status,
                           cx_error *err)
{
    *status = CX_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (!(optional && errno == ENOENT))
            *status = file_error(path, errno, err);
        return -1;
    }
    struct stat info;
    if (fstat(fd, &info) != 0)
        *status = file_error(path, errno, err);
    else if (!S_ISREG(info.st_mode))
        *status = cx_error_set(err, CX_ERR_IO, "cannot read model file (%s): not a regular file",
                               path);
    if (*status != CX_OK) {
        close(fd);
        return -1;
    }
    *size = (uint64_t)info.st_size;
    return fd;
}

/* Reads the whole small file `name` of `directory` into a malloc'ed buffer. When `optional` is
 * set and the file does not exist, returns CX_OK with *text NULL. */
static cx_status read_config_file(const char *directory, const char *name, int optional,
                                  char **text, size_t *length, cx_error *err)
{
    *text = NULL;
    *length = 0;
    char *path = path_join(directory, name);
    if (path == NULL)
        return cx_error_set(err, CX_ERR_NOMEM, "out of memory (%s): reading the model", name);
    cx_status status = CX_OK;
    char *buffer = NULL;
    uint64_t file_size = 0;
    int fd = open_model_file(path, optional, &file_size, &status, err);
    if (fd < 0)
        goto done;
    if (file_size > (uint64_t)CONFIG_FILE_LIMIT) {
        status = cx_error_set(err, CX_ERR_FORMAT,
                              "model file too large (%s): %" PRIu64 " bytes, limit %" PRId64, name,
                              file_size, CONFIG_FILE_LIMIT);
        goto done;
    }
    size_t size = (size_t)file_size;
    buffer = malloc(size + 1);
    if (buffer == NULL) {
        status = cx_error_set(err, CX_ERR_NOMEM, "out of memory (%s): reading the model", name);
        goto done;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buffer + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            status = file_error(path, errno, err);
            goto done;
        }
        if (n == 0)
            break; /* the file shrank meanwhile: parse what is there */
        got += (size_t)n;
    }
    buffer[got] = '\0';
    *text = buffer;
    *length = got;
    buffer = NULL;
done:
    if (fd >= 0)
        close(fd);
    free(buffer);
    free(path);
    return status;
}

/* cx_json_parse returns only NULL; its message tells an allocation failure from bad JSON. */
static cx_status json_failure_status(const cx_error *err)
{
    return strncmp(err->message, "out of memory", 13) == 0 ? CX_ERR_NOMEM : CX_ERR_FORMAT;
}

/* Parses the optional or required JSON file `name` of `directory`; *document is NULL when an
 * optional file is absent. The root must be an object. */
static cx_status read_config_json(const char *directory, const char *name, int optional,
                                  cx_json_document **document, cx_error *err)
{
    *document = NULL;
    char *text;
    size_t length;
    cx_status status = read_config_file(directory, name, optional, &text, &length, err);
    if (status != CX_OK || text == NULL)
        return status;
    cx_json_document *parsed = cx_json_parse(text, length, name, err);
    free(text);
    if (parsed == NULL)
        return json_failure_status(err);
    if (cx_json_type_of(cx_json_root(parsed)) != CX_JSON_OBJECT) {
        cx_json_free(parsed);
        return cx_error_set(err, CX_ERR_FORMAT, "invalid model config (%s): expected a JSON object",
                            name);
    }
    *document = parsed;
    return CX_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Config */

/* Reads the config file `name` (an optional one may be absent: `apply` then gets NULL) and
 * applies `apply` (cx_config.h) to its root. */
typedef cx_status (*config_reader)(const cx_json_value *root, cx_bert_config *config,
                                   cx_error *err);

static cx_status apply_config_file(const char *directory, const char *name, int optional,
                                   config_reader apply, cx_bert_config *config, cx_error *err)
{
    cx_json_document *document;
    cx_status status = read_config_json(directory, name, optional, &document, err);
    if (status != CX_OK)
        return status;
    status = apply(document != NULL ? cx_json_root(document) : NULL, config, err);
    cx_json_free(document);
    return status;
}

/* ------------------------------------------------------------------------------------------ */
/* Tensors */

static int model_keep_buffer(cx_model *model, float *buffer)
{
    if (model->buffer_count == model->buffer_capacity) {
        size_t capacity = model->buffer_capacity ? model->buffer_capacity * 2 : 64;
        float **grown = realloc(model->buffers, capacity * sizeof *grown);
        if (grown == NULL)
            return 0;
        model->buffers = grown;
        model->buffer_capacity = capacity;
    }
    model->buffers[model->buffer_count++] = buffer;
    return 1;
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exponent = (h >> 10) & 0x1F;
    uint32_t mantissa = h & 0x3FF;
    uint32_t bits;
    if (exponent == 0x1F) { /* inf, nan */
        bits = sign | 0x7F800000u | (mantissa << 13);
    } else if (exponent != 0) { /* normal */
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    } else if (mantissa == 0) { /* zero */
        bits = sign;
    } else { /* subnormal: renormalise */
        exponent = 113;
        while ((mantissa & 0x400) == 0) {
            mantissa <<= 1;
            exponent--;
        }
        bits = sign | (exponent << 23) | ((mantissa & 0x3FF) << 13);
    }
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

static float bfloat_to_float(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

/* Writes "[a, b]" for `rank` dims into `out`. */
static void format_shape(char *out, size_t size, const int64_t *dims, size_t rank)
{
    size_t used = (size_t)snprintf(out, size, "[");
    for (size_t i = 0; i < rank && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%" PRId64, i ? ", " : "", dims[i]);
    if (used < size)
        snprintf(out + used, size - used, "]");
}

/* Finds `name` in the header, trying the "bert." prefix and, for LayerNorm parameters, the
 * legacy gamma/beta names. Writes the name found into `found`. */
static const cx_json_value *find_tensor(const cx_json_value *header, const char *name,
                                        char found[TENSOR_NAME_SIZE])
{
    char legacy[TENSOR_NAME_SIZE] = "";
    size_t length = strlen(name);
    static const char norm_weight[] = "LayerNorm.weight", norm_bias[] = "LayerNorm.bias";
    if (length >= sizeof norm_weight - 1 &&
        strcmp(name + length - (sizeof norm_weight - 1), norm_weight) == 0)
        snprintf(legacy, sizeof legacy, "%.*sgamma", (int)(length - 6), name);
    else if (length >= sizeof norm_bias - 1 &&
             strcmp(name + length - (sizeof norm_bias - 1), norm_bias) == 0)
        snprintf(legacy, sizeof legacy, "%.*sbeta", (int)(length - 4), name);
    const char *bases[2] = {name, legacy};
    for (int b = 0; b < 2; b++) {
        if (bases[b][0] == '\0')
            continue;
        for (int prefixed = 0; prefixed < 2; prefixed++) {
            snprintf(found, TENSOR_NAME_SIZE, "%s%s", prefixed ? "bert." : "", bases[b]);
            const cx_json_value *entry = cx_json_get(header, found);
            if (entry != NULL)
                return entry;
        }
    }
    snprintf(found, TENSOR_NAME_SIZE, "%s", name);
    return NULL;
}

/* Reads a JSON array of non-negative integers (at most `capacity`) into `out`; returns the
 * count, or -1 when `value` is not such an array. */
static int read_uint_array(const cx_json_value *value, int64_t *out, size_t capacity)
{
    if (cx_json_type_of(value) != CX_JSON_ARRAY)
        return -1;
    size_t count = cx_json_array_size(value);
    if (count > capacity)
        return -1;
    for (size_t i = 0; i < count; i++)
        if (!cx_json_as_int64(cx_json_array_item(value, i), &out[i]) || out[i] < 0)
            return -1;
    return (int)count;
}

/* Loads tensor `name` with the expected shape `dims` [rank] as F32 into *out: in place when
 * the file holds aligned F32, else into a buffer the model keeps. On failure returns
 * CX_ERR_MODEL (missing, wrong dtype or shape), CX_ERR_FORMAT (malformed entry, offsets outside
 * the data or not matching the shape) or CX_ERR_NOMEM with `err` filled. */
static cx_status load_tensor(tensor_loader *loader, const char *name, const int64_t *dims,
                             size_t rank, const float **out)
{
    char found[TENSOR_NAME_SIZE];
    char expected_text[SHAPE_TEXT_SIZE], found_text[SHAPE_TEXT_SIZE];
    cx_error *err = loader->err;
    const cx_json_value *entry = find_tensor(loader->header, name, found);
    if (entry == NULL)
        return cx_error_set(err, CX_ERR_MODEL,
                            "tensor is missing (model.safetensors: %s): not in the header, with or "
                            "without the \"bert.\" prefix",
                            name);
    const char *dtype;
    int64_t shape[MAX_RANK], offsets[2];
    int shape_rank;
    if (cx_json_type_of(entry) != CX_JSON_OBJECT ||
        !cx_json_as_string(cx_json_get(entry, "dtype"), &dtype) ||
        (shape_rank = read_uint_array(cx_json_get(entry, "shape"), shape, MAX_RANK)) < 0 ||
        read_uint_array(cx_json_get(entry, "data_offsets"), offsets, 2) != 2) {
        return cx_error_set(err, CX_ERR_FORMAT,
                            "bad tensor entry (model.safetensors: %s): expected {\"dtype\": "
                            "string, \"shape\": [up to %d non-negative integers], "
                            "\"data_offsets\": [begin, end]}",
                            found, MAX_RANK);
    }
    uint64_t begin = (uint64_t)offsets[0], end = (uint64_t)offsets[1];
    if (begin > end || end > loader->data_size) {
        return cx_error_set(err, CX_ERR_FORMAT,
                            "tensor data lies outside the file (model.safetensors: %s): "
                            "data_offsets [%" PRIu64 ", %" PRIu64 "] but the data area holds "
                            "%" PRIu64 " bytes",
                            found, begin, end, loader->data_size);
    }
    size_t element_size;
    int is_f32 = 0, is_bf16 = 0;
    if (strcmp(dtype, "F32") == 0) {
        element_size = 4;
        is_f32 = 1;
    } else if (strcmp(dtype, "F16") == 0) {
        element_size = 2;
    } else if (strcmp(dtype, "BF16") == 0) {
        element_size = 2;
        is_bf16 = 1;
    } else {
        return cx_error_set(err, CX_ERR_MODEL,
                            "tensor has an unsupported dtype (model.safetensors: %s): %.16s, "
                            "expected F32, F16 or BF16",
                            found, dtype);
    }
    int shape_matches = (size_t)shape_rank == rank;
    for (size_t i = 0; shape_matches && i < rank; i++)
        shape_matches = shape[i] == dims[i];
    if (!shape_matches) {
        format_shape(expected_text, sizeof expected_text, dims, rank);
        format_shape(found_text, sizeof found_text, shape, (size_t)shape_rank);
        return cx_error_set(err, CX_ERR_MODEL,
                            "tensor has the wrong shape (model.safetensors: %s): expected %s, "
                            "found %s",
                            found, expected_text, found_text);
    }
    uint64_t count = 1, bytes;
    for (size_t i = 0; i < rank; i++)
        if (__builtin_mul_overflow(count, (uint64_t)dims[i], &count))
            count = UINT64_MAX;
    if (__builtin_mul_overflow(count, (uint64_t)element_size, &bytes) || bytes != end - begin ||
        count > SIZE_MAX / sizeof(float)) {
        format_shape(expected_text, sizeof expected_text, dims, rank);
        return cx_error_set(err, CX_ERR_FORMAT,
                            "tensor size does not match its shape (model.safetensors: %s): %s %s "
                            "needs %" PRIu64 " bytes, data_offsets [%" PRIu64 ", %" PRIu64 "] "
                            "hold %" PRIu64,
                            found, expected_text, dtype, bytes, begin, end, end - begin);
    }
    const unsigned char *source = loader->data + begin;
    if (is_f32 && ((uintptr_t)source % _Alignof(float)) == 0) {
        loader->in_place++;
        *out = (const float *)(const void *)source;
        return CX_OK;
    }
    float *buffer = malloc(count ? (size_t)count * sizeof(float) : 1);
    if (buffer == NULL || !model_keep_buffer(loader->model, buffer)) {
        free(buffer);
        return cx_error_set(err, CX_ERR_NOMEM,
                            "out of memory (model.safetensors: %s): %" PRIu64 " floats", found,
                            count);
    }
    if (is_f32) {
        memcpy(buffer, source, (size_t)bytes); /* misaligned in the file: copy */
    } else {
        for (size_t i = 0; i < (size_t)count; i++) {
            uint16_t half = (uint16_t)(source[2 * i] | (source[2 * i + 1] << 8));
            buffer[i] = is_bf16 ? bfloat_to_float(half) : half_to_float(half);
        }
    }
    *out = buffer;
    return CX_OK;
}

/* Shape letters of the weight tables: V vocab, P positions, T token types, H hidden,
 * I intermediate. */
static int64_t dim_of(const cx_bert_config *config, char letter)
{
    switch (letter) {
    case 'V': return config->vocab_size;
    case 'P': return config->max_position_embeddings;
    case 'T': return config->type_vocab_size;
    case 'H': return config->hidden_size;
    case 'I': return config->intermediate_size;
    default: return -1;
    }
}

static cx_status load_named(tensor_loader *loader, const char *name, const char *shape,
                            const float **out)
{
    int64_t dims[2];
    size_t rank = strlen(shape);
    for (size_t i = 0; i < rank; i++)
        dims[i] = dim_of(&loader->model->config, shape[i]);
    return load_tensor(loader, name, dims, rank, out);
}

static const struct {
    const char *suffix;
    size_t field; /* offset of the pointer in cx_bert_layer_weights */
    const char *shape;
} LAYER_TENSORS[] = {
    {"attention.self.query.weight", offsetof(cx_bert_layer_weights, query_weight), "HH"},
    {"attention.self.query.bias", offsetof(cx_bert_layer_weights, query_bias), "H"},
    {"attention.self.key.weight", offsetof(cx_bert_layer_weights, key_weight), "HH"},
    {"attention.self.key.bias", offsetof(cx_bert_layer_weights, key_bias), "H"},
    {"attention.self.value.weight", offsetof(cx_bert_layer_weights, value_weight), "HH"},
    {"attention.self.value.bias", offsetof(cx_bert_layer_weights, value_bias), "H"},
    {"attention.output.dense.weight", offsetof(cx_bert_layer_weights, attention_output_weight),
     "HH"},
    {"attention.output.dense.bias", offsetof(cx_bert_layer_weights, attention_output_bias), "H"},
    {"attention.output.LayerNorm.weight", offsetof(cx_bert_layer_weights, attention_norm_weight),
     "H"},
    {"attention.output.LayerNorm.bias", offsetof(cx_bert_layer_weights, attention_norm_bias), "H"},
    {"intermediate.dense.weight", offsetof(cx_bert_layer_weights, intermediate_weight), "IH"},
    {"intermediate.dense.bias", offsetof(cx_bert_layer_weights, intermediate_bias), "I"},
    {"output.dense.weight", offsetof(cx_bert_layer_weights, output_weight), "HI"},
    {"output.dense.bias", offsetof(cx_bert_layer_weights, output_bias), "H"},
    {"output.LayerNorm.weight", offsetof(cx_bert_layer_weights, output_norm_weight), "H"},
    {"output.LayerNorm.bias", offsetof(cx_bert_layer_weights, output_norm_bias), "H"},
};

static cx_status load_weights(tensor_loader *loader)
{
    cx_model *model = loader->model;
    cx_bert_weights *w = &model->weights;
    cx_status status;
    if ((status = load_named(loader, "embeddings.word_embeddings.weight", "VH",
                             &w->word_embeddings)) ||
        (status = load_named(loader, "embeddings.position_embeddings.weight", "PH",
                             &w->position_embeddings)) ||
        (status = load_named(loader, "embeddings.token_type_embeddings.weight", "TH",
                             &w->token_type_embeddings)) ||
        (status = load_named(loader, "embeddings.LayerNorm.weight", "H",
                             &w->embedding_norm_weight)) ||
        (status = load_named(loader, "embeddings.LayerNorm.bias", "H", &w->embedding_norm_bias)))
        return status;
    for (int64_t layer = 0; layer < model->config.num_layers; layer++) {
        for (size_t t = 0; t < sizeof LAYER_TENSORS / sizeof LAYER_TENSORS[0]; t++) {
            char name[TENSOR_NAME_SIZE];
            snprintf(name, sizeof name, "encoder.layer.%" PRId64 ".%s", layer,
                     LAYER_TENSORS[t].suffix);
            const float **field =
                (const float **)((char *)&model->layers[layer] + LAYER_TENSORS[t].field);
            if ((status = load_named(loader, name, LAYER_TENSORS[t].shape, field)) != CX_OK)
                return status;
        }
    }
    return CX_OK;
}

/* Maps model.safetensors, parses its header and loads every weight. */
static cx_status read_safetensors(cx_model *model, cx_error *err)
{
    static const char name[] = "model.safetensors";
    cx_status status = CX_OK;
    cx_json_document *header = NULL;
    char *path = path_join(model->directory, name);
    if (path == NULL)
        return cx_error_set(err, CX_ERR_NOMEM, "out of memory (%s): reading the model", name);
    uint64_t file_size = 0;
    int fd = open_model_file(path, 0, &file_size, &status, err);
    if (fd < 0)
        goto done;
    if (file_size < 8) {
        status = cx_error_set(err, CX_ERR_FORMAT,
                              "truncated safetensors file (%s): %" PRIu64
                              " bytes, too short for the 8-byte header length",
                              name, file_size);
        goto done;
    }
    if (file_size > SIZE_MAX) {
        status = cx_error_set(err, CX_ERR_IO, "cannot map model file (%s): too large", path);
        goto done;
    }
    void *map = mmap(NULL, (size_t)file_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        status = cx_error_set(err, CX_ERR_IO, "cannot map model file (%s): %s", path,
                              strerror(errno));
        goto done;
    }
    model->map = map;
    model->map_size = (size_t)file_size;
    const unsigned char *bytes = map;
    uint64_t header_length = 0;
    for (int i = 7; i >= 0; i--)
        header_length = (header_length << 8) | bytes[i];
    if (header_length == 0 || header_length > SAFETENSORS_HEADER_LIMIT) {
        status = cx_error_set(err, CX_ERR_FORMAT,
                              "bad safetensors header (%s): header length %" PRIu64
                              ", expected 1 to %" PRIu64,
                              name, header_length, SAFETENSORS_HEADER_LIMIT);
        goto done;
    }
    if (header_length > file_size - 8) {
        status = cx_error_set(err, CX_ERR_FORMAT,
                              "truncated safetensors file (%s): header length %" PRIu64
                              " but only %" PRIu64 " bytes follow it",
                              name, header_length, file_size - 8);
        goto done;
    }
    header = cx_json_parse((const char *)bytes + 8, (size_t)header_length,
                           "model.safetensors header", err);
    if (header == NULL) {
        status = json_failure_status(err);
        goto done;
    }
    if (cx_json_type_of(cx_json_root(header)) != CX_JSON_OBJECT) {
        status = cx_error_set(err, CX_ERR_FORMAT,
                              "bad safetensors header (%s): expected a JSON object", name);
        goto done;
    }
    tensor_loader loader = {
        .model = model,
        .header = cx_json_root(header),
        .data = bytes + 8 + header_length,
        .data_size = file_size - 8 - header_length,
        .in_place = 0,
        .err = err,
    };
    if ((status = load_weights(&loader)) != CX_OK)
        goto done;
    if (loader.in_place == 0) {
        /* Every weight was converted into an owned buffer: the mapping is no longer needed. */
        munmap(model->map, model->map_size);
        model->map = NULL;
        model->map_size = 0;
    }
done:
    cx_json_free(header);
    if (fd >= 0)
        close(fd);
    free(path);
    return status;
}

/* ------------------------------------------------------------------------------------------ */
/* Public API */

cx_model *cx_model_open(const char *directory, cx_status *status_out, cx_error *err)
{
    cx_status status = CX_OK;
    cx_model *model = NULL;
    cx_error local_error; /* messages are needed internally even when the caller passes NULL */
    if (err == NULL)
        err = &local_error;
    cx_error_clear(err);
    if (directory == NULL || directory[0] == '\0') {
        status = cx_error_set(err, CX_ERR_ARGUMENT, "model folder not given (\"\"): empty path");
        goto fail;
    }
    struct stat info;
    if (stat(directory, &info) != 0) {
        status = cx_error_set(err, CX_ERR_IO, "model folder not found (%s): %s", directory,
                              strerror(errno));
        goto fail;
    }
    if (!S_ISDIR(info.st_mode)) {
        status = cx_error_set(err, CX_ERR_IO, "model folder not found (%s): %s", directory,
                              strerror(ENOTDIR));
        goto fail;
    }
    model = calloc(1, sizeof *model);
    if (model == NULL || (model->directory = strdup(directory)) == NULL ||
        (model->vocab_path = path_join(directory, "vocab.txt")) == NULL) {
        status = cx_error_set(err, CX_ERR_NOMEM, "out of memory (%s): opening the model",
                              directory);
        goto fail;
    }
    cx_bert_config *config = &model->config;
    if ((status = apply_config_file(directory, "config.json", 0, cx_config_read_bert, config,
                                    err)) != CX_OK ||
        (status = apply_config_file(directory, "sentence_bert_config.json", 1,
                                    cx_config_read_sentence, config, err)) != CX_OK ||
        (status = apply_config_file(directory, "tokenizer_config.json", 1,
                                    cx_config_read_tokenizer, config, err)) != CX_OK)
        goto fail;
    if (access(model->vocab_path, R_OK) != 0) {
        status = file_error(model->vocab_path, errno, err);
        goto fail;
    }
    model->layers = calloc((size_t)config->num_layers, sizeof *model->layers);
    if (model->layers == NULL) {
        status = cx_error_set(err, CX_ERR_NOMEM, "out of memory (%s): opening the model",
                              directory);
        goto fail;
    }
    model->weights.layers = model->layers;
    if ((status = read_safetensors(model, err)) != CX_OK)
        goto fail;
    if (status_out != NULL)
        *status_out = CX_OK;
    return model;
fail:
    cx_model_free(model);
    if (status_out != NULL)
        *status_out = status;
    return NULL;
}

void cx_model_free(cx_model *model)
{
    if (model == NULL)
        return;
    if (model->map != NULL)
        munmap(model->map, model->map_size);
    for (size_t i = 0; i < model->buffer_count; i++)
        free(model->buffers[i]);
    free(model->buffers);
    free(model->layers);
    free(model->vocab_path);
    free(model->directory);
    free(model);
}

const cx_bert_config *cx_model_config(const cx_model *model)
{
    return &model->config;
}

const cx_bert_weights *cx_model_weights(const cx_model *model)
{
    return &model->weights;
}

const char *cx_model_directory(const cx_model *model)
{
    return model->directory;
}

const char *cx_model_vocab_path(const cx_model *model)
{
    return model->vocab_path;
}
