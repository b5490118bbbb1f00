/* cx_rows.h: the row kernels of the forward pass that libtorch would run scalar or in several
 * passes: residual + LayerNorm, softmax of attention rows, bf16 bias + GELU, the head split and
 * merge of bf16 attention, bfloat16 conversions.
 *
 * Each works on a range of rows so that the caller can split rows across threads. They cannot
 * fail. Arithmetic is fp32 whatever the storage; bf16 values are the upper 16 bits of an IEEE
 * float (libtorch's at::BFloat16), rounded to nearest even. The loops are compiled for AVX-512,
 * AVX2 and plain x86-64 and the CPU picks at load time (GCC target_clones), because libtorch's
 * own kernels in Debian's build run these steps without AVX. */
#ifndef COARCH_CX_ROWS_H
#define COARCH_CX_ROWS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint16_t cx_bf16; /* the upper 16 bits of an IEEE float, as libtorch's at::BFloat16 */

/* The bf16 nearest to `value` (ties to even), and back. */
cx_bf16 cx_bf16_from_float(float value);
float cx_bf16_to_float(cx_bf16 value);

/* For each of `count` rows of `width` floats:
 *   row = LayerNorm(row + residual) * gamma + beta     (population variance, eps inside sqrt)
 * in place. The residual is `add` (fp32), else `add_low` (bf16), else none (both NULL). When
 * `out_low` is not NULL the result is also written there in bf16, row for row, so that the next
 * bf16 product needs no separate conversion pass. */
void cx_rows_add_layer_norm(float *rows, const float *add, const cx_bf16 *add_low,
                            const float *gamma, const float *beta, float eps, int64_t count,
                            int64_t width, cx_bf16 *out_low);

/* Softmax of the first `width` values of each of `count` rows laid `stride` values apart, in
 * place: exponentials and their sum in fp32, probabilities rounded once to bf16; the values from
 * `width` to `stride` (padding keys) become 0. `work` holds `width` rounded up to 16 floats. */
void cx_rows_softmax_bf16(cx_bf16 *rows, int64_t count, int64_t width, int64_t stride,
                          float *work);

/* The portable version of cx_rows_softmax_bf16, which CPUs without AVX-512-BF16 run (results
 * within bf16 rounding of the other); exported for the tests. */
void cx_rows_softmax_bf16_generic(cx_bf16 *rows, int64_t count, int64_t width, int64_t stride,
                                  float *work);

/* rows[r][i] = GELU(rows[r][i] + bias[i]) for `count` rows of `width` bf16 values, in place: BERT's
 * erf form, in fp32, rounded once. The product before it runs without its bias, which this adds. */
void cx_rows_bias_gelu_bf16(cx_bf16 *rows, const float *bias, int64_t count, int64_t width);

/* The portable version (erff), which CPUs without AVX-512-BF16 run; exported for the tests. */
void cx_rows_bias_gelu_bf16_generic(cx_bf16 *rows, const float *bias, int64_t count,
                                    int64_t width);

/* Softmax of each of `count` rows of `width` floats, in place. */
void cx_rows_softmax(float *rows, int64_t count, int64_t width);

/* Attention's change of layout for one text, values copied as they are. `rows` holds `length`
 * rows of `parts` x `heads` x `head_dim` values (a token's query, key and value, heads side by
 * side); head h of part p goes to blocks + p * part_stride + h * block_rows * head_dim, one row
 * of head_dim per token. The last part's rows from `length` to `block_rows` are zeroed: they
 * are the padding keys' values, which softmax weighs 0 and which must then be finite. */
void cx_rows_split_heads_bf16(const cx_bf16 *rows, int64_t length, int64_t parts, int64_t heads,
                              int64_t head_dim, cx_bf16 *blocks, int64_t part_stride,
                              int64_t block_rows);

/* The way back for one part: rows[l][h * head_dim + i] = blocks[(h * block_rows + l) * head_dim
 * + i] for the first `length` rows. */
void cx_rows_merge_heads_bf16(const cx_bf16 *blocks, int64_t length, int64_t heads,
                              int64_t head_dim, int64_t block_rows, cx_bf16 *rows);

#ifdef __cplusplus
}
#endif

#endif
