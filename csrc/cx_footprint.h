/* cx_footprint.h: the BERT encoder's memory for a model's shape: the bytes of its weights and of
 * the scratch a forward pass grows, and the padded shapes the bf16 path runs its products on.
 *
 * Pure arithmetic on a cx_bert_config, shared by the encoder (cx_bert.cpp, which allocates these
 * shapes) and the memory manager (cx_memory.c, which predicts them), so the two cannot drift. */
#ifndef COARCH_CX_FOOTPRINT_H
#define COARCH_CX_FOOTPRINT_H

#include <stdint.h>

#include "cx_model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* oneDNN builds (JIT-compiles) a kernel per product shape and caches it. Packed batches have a
 * new token count almost every time, so bf16 products run over the tokens rounded up to a
 * multiple of CX_FOOTPRINT_PRODUCT_ROWS: a few dozen shapes in all, each built once. Fewer
 * tokens than that (a search query: a dozen) round up to a power of two from
 * CX_FOOTPRINT_MIN_PRODUCT_ROWS, four shapes more: a 12-token query rounded up to 256 rows took
 * 36 ms on one thread, 7.3 ms at 32 rows. */
#define CX_FOOTPRINT_PRODUCT_ROWS 256
#define CX_FOOTPRINT_MIN_PRODUCT_ROWS 32
/* bf16 attention computes the score matrices of a group of texts at once; a group's scores
 * stay under this many bytes whatever the batch. */
#define CX_FOOTPRINT_SCORE_BYTES (16 << 20)

/* Rows of the bf16 products for `tokens` packed tokens: a power of two from MIN_PRODUCT_ROWS
 * below PRODUCT_ROWS, else rounded up to a multiple of PRODUCT_ROWS. */
int64_t cx_footprint_product_rows(int64_t tokens);

/* Length of the bf16 attention blocks for a batch whose longest text has `longest` tokens:
 * rounded up to 32, for the same reason as the product rows (a handful of shapes). */
int64_t cx_footprint_attention_rows(int64_t longest);

/* Texts whose bf16 scores ([heads, rows, rows] each, rows = attention_rows) fit in SCORE_BYTES
 * together; at least 1. */
int64_t cx_footprint_score_group(int64_t heads, int64_t rows);

/* Bytes of scratch (activations) a forward of `batch` texts of at most `seq_len` tokens grows at
 * its peak, in either precision, with `threads` intra-op threads: an upper bound, as the tokens
 * are packed without padding (see the Scratch struct of cx_bert.cpp for the tensors counted). */
int64_t cx_footprint_scratch_bytes(const cx_bert_config *config, int64_t batch, int64_t seq_len,
                                   int64_t threads);

/* Bytes of the model's float32 weights: embeddings, and per layer the Q/K/V/output and
 * feed-forward matrices with their biases and norms. */
int64_t cx_footprint_weights_bytes(const cx_bert_config *config);

#ifdef __cplusplus
}
#endif

#endif
