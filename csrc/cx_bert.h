/* cx_bert.h: the BERT encoder forward pass, implemented over libtorch's ATen in cx_bert.cpp.
 *
 * C++ behind a plain-C API (as cx_backend.cpp is, for libtorch itself): every function catches
 * c10::Error, std::exception and everything else, fills `err` and returns a negative status;
 * nothing throws across this boundary. Weights are wrapped, not copied (CPU), so the cx_model
 * that owns them must outlive the cx_bert. Scratch tensors are grown to the largest batch seen
 * and reused, because a fresh 100 MB output per matmul costs 30-50% in page faults. */
#ifndef COARCH_CX_BERT_H
#define COARCH_CX_BERT_H

#include <stddef.h>
#include <stdint.h>

#include "cx_error.h"
#include "cx_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cx_device { CX_DEVICE_CPU = 0, CX_DEVICE_CUDA = 1 } cx_device;

/* Precision of the matrix products. In CX_PRECISION_BF16 the dense weights are converted to
 * bfloat16 once at creation and every product (dense layers, attention's two) runs in bf16,
 * accumulating in fp32 inside oneDNN; softmax, GELU, residuals, LayerNorm, pooling and
 * normalisation compute in fp32, the residual stream stays fp32, and the output is float32. */
typedef enum cx_precision { CX_PRECISION_FP32 = 0, CX_PRECISION_BF16 = 1 } cx_precision;

typedef struct cx_bert cx_bert; /* opaque: weight tensors, scratch tensors, device */

/* Wraps `weights` (shapes per `config`) for inference on `device` in `precision`; CUDA copies
 * them to the GPU, bf16 converts the dense weights. Returns NULL and fills `err` on failure
 * (CX_ERR_ARGUMENT when CUDA is asked for but not available). Caller frees with cx_bert_free. */
cx_bert *cx_bert_new(const cx_bert_config *config, const cx_bert_weights *weights,
                     cx_device device, cx_precision precision, cx_error *err);
void cx_bert_free(cx_bert *bert); /* NULL is fine */

/* Runs the encoder on one batch of texts, packed without padding, and writes sentence vectors.
 *   ids:     [sum of lengths] int32: the texts' token ids back to back
 *   lengths: [batch] int32, each in [1, max_position_embeddings]
 *   out:     [batch, hidden] float32, row-major: the mean of each text's last-layer token
 *            states, L2-normalised
 * fp32 attention (and any on CUDA) runs per text over its own tokens: no mask, no padding. bf16
 * attention on a CPU pads the batch's texts to one block length, a multiple of 32
 * (cx_footprint.h), and its softmax zeroes the padding keys. Runs with autograd off. Does not touch Python; call it without the GIL. */
cx_status cx_bert_forward(cx_bert *bert, const int32_t *ids, const int32_t *lengths,
                          int64_t batch, float *out, cx_error *err);

/* Frees the scratch tensors (they are regrown by the next forward), returning their memory.
 * What a forward grows is predicted by cx_footprint_scratch_bytes (cx_footprint.h). */
void cx_bert_release_scratch(cx_bert *bert);

/* Bytes currently held in scratch tensors. */
int64_t cx_bert_scratch_held(const cx_bert *bert);

cx_device cx_bert_device(const cx_bert *bert);
cx_precision cx_bert_precision(const cx_bert *bert);

/* The configuration the encoder was built with (borrowed). */
const cx_bert_config *cx_bert_config_of(const cx_bert *bert);

#ifdef __cplusplus
}
#endif

#endif
