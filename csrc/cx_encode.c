/* cx_encode.c: the hot batch loop. Tokenize every text once, sort by length so that batches
 * are uniform, cut batches by a budget of padded tokens (rows x longest text, from the
 * MemoryManager when there is one), run the forward pass on the packed batch, and scatter each
 * vector back to its text's row. The budget counts padding although the encoder packs tokens:
 * it bounds the memory of a batch whatever the lengths, and with length-sorted batches the
 * difference is small. */
#include "cx_encode.h"

#include "cx_backend.h"
#include "cx_footprint.h"

#include <stdlib.h>
#include <string.h>

/* Budget when neither the caller nor a MemoryManager gives one: large enough that the matrix
 * products run at full speed, small enough that the scratch stays near 100 MB. */
#define CX_DEFAULT_BATCH_TOKENS 8192

static cx_status grow(void **buffer, int64_t *capacity, int64_t needed, size_t item_size,
                      cx_error *err)
{
    if (needed <= *capacity)
        return CX_OK;
    int64_t target = *capacity > 0 ? *capacity : 1024;
    while (target < needed)
        target *= 2;
    void *resized = realloc(*buffer, (size_t)target * item_size);
    if (resized == NULL)
        return cx_error_set(err, CX_ERR_NOMEM, "cannot encode: out of memory for %lld items",
                            (long long)target);
    *buffer = resized;
    *capacity = target;
    return CX_OK;
}

void cx_encode_scratch_release(cx_encode_scratch *scratch)
{
    free(scratch->token_ids);
    free(scratch->offsets);
    free(scratch->lengths);
    free(scratch->order);
    free(scratch->batch_ids);
    free(scratch->batch_lengths);
    free(scratch->batch_vectors);
    memset(scratch, 0, sizeof *scratch);
}

static cx_status reserve_texts(cx_encode_scratch *scratch, int64_t count, cx_error *err)
{
    if (count <= scratch->text_capacity)
        return CX_OK;
    int64_t *offsets = realloc(scratch->offsets, (size_t)(count + 1) * sizeof *offsets);
    if (offsets != NULL)
        scratch->offsets = offsets;
    int32_t *lengths = realloc(scratch->lengths, (size_t)count * sizeof *lengths);
    if (lengths != NULL)
        scratch->lengths = lengths;
    int64_t *order = realloc(scratch->order, (size_t)count * sizeof *order);
    if (order != NULL)
        scratch->order = order;
    if (offsets == NULL || lengths == NULL || order == NULL)
        return cx_error_set(err, CX_ERR_NOMEM, "cannot encode %lld texts: out of memory",
                            (long long)count);
    scratch->text_capacity = count;
    return CX_OK;
}

static cx_status tokenize_all(const cx_tokenizer *tokenizer, const cx_encode_request *request,
                              cx_encode_scratch *scratch, cx_error *err)
{
    int64_t used = 0;
    for (int64_t i = 0; i < request->count; ++i) {
        cx_status status = grow((void **)&scratch->token_ids, &scratch->token_capacity,
                                used + request->max_seq_length, sizeof(int32_t), err);
        if (status != CX_OK)
            return status;
        const cx_text *text = &request->texts[i];
        int64_t written = cx_tokenizer_encode(tokenizer, text->data, text->length,
                                              scratch->token_ids + used, request->max_seq_length,
                                              err);
        if (written < 0)
            return (cx_status)written;
        scratch->offsets[i] = used;
        scratch->lengths[i] = (int32_t)written;
        used += written;
    }
    scratch->offsets[request->count] = used;
    return CX_OK;
}

/* qsort has no context argument: the lengths are passed through this thread-local. */
static _Thread_local const int32_t *sort_lengths;

static int longest_first(const void *left, const void *right)
{
    int64_t a = *(const int64_t *)left, b = *(const int64_t *)right;
    if (sort_lengths[a] != sort_lengths[b])
        return sort_lengths[a] > sort_lengths[b] ? -1 : 1;
    return a < b ? -1 : (a > b ? 1 : 0); /* stable: equal lengths keep input order */
}

static void sort_by_length(cx_encode_scratch *scratch, int64_t count)
{
    for (int64_t i = 0; i < count; ++i)
        scratch->order[i] = i;
    sort_lengths = scratch->lengths;
    qsort(scratch->order, (size_t)count, sizeof *scratch->order, longest_first);
    sort_lengths = NULL;
}

static int64_t batch_budget(const cx_encode_request *request, const cx_bert_config *config,
                            int64_t seq_len)
{
    int64_t budget = request->batch_tokens > 0 ? request->batch_tokens : CX_DEFAULT_BATCH_TOKENS;
    if (request->memory != NULL) {
        int64_t managed = cx_memory_batch_tokens(request->memory, config, seq_len);
        budget = request->batch_tokens > 0 && request->batch_tokens < managed
                     ? request->batch_tokens
                     : managed;
    }
    return budget;
}

static cx_status reserve_batch(cx_memory *memory, const cx_bert_config *config, int64_t *rows,
                               int64_t seq_len, int64_t *reserved, cx_error *err)
{
    *reserved = 0;
    if (memory == NULL)
        return CX_OK;
    for (;;) {
        int64_t bytes = cx_footprint_scratch_bytes(config, *rows, seq_len, cx_backend_threads());
        cx_status status = cx_memory_reserve(memory, bytes, err);
        if (status == CX_OK) {
            *reserved = bytes;
            cx_error_clear(err);
            return CX_OK;
        }
        if (status != CX_ERR_MEMORY_LIMIT || *rows == 1)
            return status;
        *rows = (*rows + 1) / 2; /* a smaller batch may still fit */
    }
}

/* Packs the ids of texts order[first .. first + rows) back to back (the encoder needs no
 * padding) and their lengths. */
static cx_status prepare_batch(cx_encode_scratch *scratch, int64_t first, int64_t rows,
                               int64_t seq_len, int64_t hidden, cx_error *err)
{
    cx_status status = grow((void **)&scratch->batch_ids, &scratch->batch_capacity_tokens,
                            rows * seq_len, sizeof(int32_t), err);
    if (status != CX_OK)
        return status;
    if (rows > scratch->batch_capacity_rows) {
        int32_t *lengths = realloc(scratch->batch_lengths, (size_t)rows * sizeof *lengths);
        if (lengths != NULL)
            scratch->batch_lengths = lengths;
        float *vectors = realloc(scratch->batch_vectors, (size_t)(rows * hidden) * sizeof *vectors);
        if (vectors != NULL)
            scratch->batch_vectors = vectors;
        if (lengths == NULL || vectors == NULL)
            return cx_error_set(err, CX_ERR_NOMEM, "cannot encode a batch of %lld: out of memory",
                                (long long)rows);
        scratch->batch_capacity_rows = rows;
    }
    int32_t *packed = scratch->batch_ids;
    for (int64_t r = 0; r < rows; ++r) {
        int64_t text = scratch->order[first + r];
        int32_t length = scratch->lengths[text];
        memcpy(packed, scratch->token_ids + scratch->offsets[text], (size_t)length * sizeof *packed);
        packed += length;
        scratch->batch_lengths[r] = length;
    }
    return CX_OK;
}

static void scatter_batch(const cx_encode_scratch *scratch, int64_t first, int64_t rows,
                          int64_t hidden, float *out)
{
    for (int64_t r = 0; r < rows; ++r) {
        int64_t text = scratch->order[first + r];
        memcpy(out + text * hidden, scratch->batch_vectors + r * hidden,
               (size_t)hidden * sizeof *out);
    }
}

/* The MemoryManager's release hook: frees the encoder's scratch (regrown by the next batch). */
static void release_scratch(void *bert)
{
    cx_bert_release_scratch(bert);
}

cx_status cx_encode_run(const cx_tokenizer *tokenizer, cx_bert *bert,
                        const cx_encode_request *request, cx_encode_scratch *scratch,
                        cx_error *err)
{
    const cx_bert_config *config = cx_bert_config_of(bert);
    const int64_t count = request->count, hidden = config->hidden_size;
    if (count == 0)
        return CX_OK;
    if (request->max_seq_length < 2 || request->max_seq_length > config->max_position_embeddings)
        return cx_error_set(err, CX_ERR_ARGUMENT,
                            "max_seq_length must be between 2 and %lld, not %lld",
                            (long long)config->max_position_embeddings,
                            (long long)request->max_seq_length);

    cx_status status = reserve_texts(scratch, count, err);
    if (status == CX_OK)
        status = tokenize_all(tokenizer, request, scratch, err);
    if (status != CX_OK)
        return status;
    sort_by_length(scratch, count);

    int64_t done = 0;
    while (done < count) {
        /* Longest first: the first row of a batch fixes its padded length. */
        const int64_t seq_len = scratch->lengths[scratch->order[done]];
        int64_t rows = batch_budget(request, config, seq_len) / seq_len;
        if (rows < 1)
            rows = 1;
        if (rows > count - done)
            rows = count - done;

        int64_t reserved = 0;
        status = reserve_batch(request->memory, config, &rows, seq_len, &reserved, err);
        if (status == CX_OK)
            status = prepare_batch(scratch, done, rows, seq_len, hidden, err);
        if (status == CX_OK)
            status = cx_bert_forward(bert, scratch->batch_ids, scratch->batch_lengths, rows,
                                     scratch->batch_vectors, err);
        if (request->memory != NULL && reserved > 0)
            cx_memory_release(request->memory, reserved);
        if (status != CX_OK)
            return status;

        scatter_batch(scratch, done, rows, hidden, request->out);
        done += rows;
        int actions = 0;
        if (request->memory != NULL) {
            /* Exact accounting: what the grown scratch holds is reused by the next batch. At
             * HIGH/CRITICAL the manager frees it (release_scratch) before malloc_trim, so that
             * a smaller budget really gives memory back. */
            cx_memory_set_held(request->memory, cx_bert_scratch_held(bert));
            actions = cx_memory_after_batch_release(request->memory, release_scratch, bert);
        }
        if (request->after_batch != NULL) {
            status = request->after_batch(request->hook_context, done, count, actions, err);
            if (status != CX_OK)
                return status;
        }
        if ((actions & CX_MEMORY_ACTION_WAIT) != 0)
            cx_memory_wait_for_relief(request->memory);
    }
    return CX_OK;
}
