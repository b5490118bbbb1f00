/* cx_encode.h: the hot batch loop: texts -> token ids -> length-sorted batches under a budget of
 * padded tokens -> forward pass -> each vector written into its original row.
 *
 * Engine code: never touches Python. The bridge (embedder_type.c) copies the texts' UTF-8
 * pointers while holding the GIL, then calls cx_encode_run with the GIL released; the
 * between-batches hook is where the bridge re-takes the GIL for signals, progress and gc. */
#ifndef COARCH_CX_ENCODE_H
#define COARCH_CX_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "cx_bert.h"
#include "cx_error.h"
#include "cx_memory.h"
#include "cx_tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cx_text {
    const char *data; /* UTF-8, borrowed for the duration of the call */
    size_t length;
} cx_text;

/* Called after each batch, without the GIL. `done` texts of `total` have their vectors; `actions`
 * are the MemoryManager's CX_MEMORY_ACTION_* flags (0 without a manager). Return CX_OK to go on,
 * or a negative status (with `err` filled) to stop the loop with that status. */
typedef cx_status (*cx_encode_hook)(void *context, int64_t done, int64_t total, int actions,
                                    cx_error *err);

/* Reusable buffers of the loop (token arena, order, padded batch); grown, never shrunk, until
 * cx_encode_scratch_release. Zero-initialise before first use. */
typedef struct cx_encode_scratch {
    int32_t *token_ids;     /* all texts' ids back to back; capacity token_capacity */
    int64_t token_capacity;
    int64_t *offsets;       /* [n + 1] start of each text's ids in token_ids */
    int32_t *lengths;       /* [n] id count of each text */
    int64_t *order;         /* [n] text indices sorted by length, longest first */
    int64_t text_capacity;
    int32_t *batch_ids;     /* packed ids of the batch in hand (at most rows x longest) */
    int32_t *batch_lengths; /* [rows] */
    float *batch_vectors;   /* [rows, hidden] */
    int64_t batch_capacity_tokens, batch_capacity_rows;
} cx_encode_scratch;

void cx_encode_scratch_release(cx_encode_scratch *scratch);

typedef struct cx_encode_request {
    const cx_text *texts;       /* [count] */
    int64_t count;
    int64_t max_seq_length;     /* ids kept per text, [CLS] and [SEP] included */
    int64_t batch_tokens;       /* budget of padded tokens per batch; 0: the manager's or default */
    cx_memory *memory;          /* optional: the budget of each batch and the hooks come from it */
    cx_encode_hook after_batch; /* optional */
    void *hook_context;
    float *out;                 /* [count, hidden] float32, row i for texts[i] */
} cx_encode_request;

/* Runs the whole request. Returns CX_OK, or the first failure: a hook's status
 * (CX_ERR_INTERRUPTED), CX_ERR_MEMORY_LIMIT when one text cannot fit alone, CX_ERR_BACKEND,
 * CX_ERR_NOMEM. Rows of texts not yet encoded are left as they were. */
cx_status cx_encode_run(const cx_tokenizer *tokenizer, cx_bert *bert,
                        const cx_encode_request *request, cx_encode_scratch *scratch,
                        cx_error *err);

#ifdef __cplusplus
}
#endif

#endif
