/* cx_footprint.c: bytes of the BERT encoder's weights and scratch for a model's shape. */
#include "cx_footprint.h"

int64_t cx_footprint_product_rows(int64_t tokens)
{
    if (tokens < CX_FOOTPRINT_PRODUCT_ROWS) {
        int64_t rows = CX_FOOTPRINT_MIN_PRODUCT_ROWS;
        while (rows < tokens)
            rows *= 2;
        return rows;
    }
    return (tokens + CX_FOOTPRINT_PRODUCT_ROWS - 1) / CX_FOOTPRINT_PRODUCT_ROWS *
           CX_FOOTPRINT_PRODUCT_ROWS;
}

int64_t cx_footprint_attention_rows(int64_t longest)
{
    return (longest + 31) / 32 * 32;
}

int64_t cx_footprint_score_group(int64_t heads, int64_t rows)
{
    const int64_t group = CX_FOOTPRINT_SCORE_BYTES / (2 * heads * rows * rows);
    return group > 1 ? group : 1;
}

int64_t cx_footprint_scratch_bytes(const cx_bert_config *config, int64_t batch, int64_t seq_len,
                                   int64_t threads)
{
    /* T = batch x seq_len tokens (a bound: packing needs no more), L = seq_len. fp32: hidden,
     * qkv (3), context, projected: 6 x [T, H] and intermediate [T, I], and one [L, L] score
     * matrix per thread. bf16: hidden [T, H] in fp32; in bf16 the same 6 x [T, H] + [T, I] over
     * product_rows() rows, the head-major blocks 4 x [batch, attention_rows(), H] and one
     * group's scores. Both: ids and positions [T] int64. */
    const int64_t tokens = batch * seq_len, h = config->hidden_size;
    const int64_t inner = config->intermediate_size, heads = config->num_heads;
    const int64_t fp32 = 4 * tokens * (6 * h + inner) + 4 * threads * seq_len * seq_len;
    const int64_t rows = cx_footprint_product_rows(tokens);
    const int64_t block = cx_footprint_attention_rows(seq_len);
    const int64_t group = cx_footprint_score_group(heads, block);
    const int64_t scores = (batch < group ? batch : group) * heads * block * block;
    const int64_t bf16 =
        4 * tokens * h + 2 * rows * (6 * h + inner) + 2 * 4 * batch * block * h + 2 * scores;
    return (fp32 > bf16 ? fp32 : bf16) + 16 * tokens;
}

int64_t cx_footprint_weights_bytes(const cx_bert_config *config)
{
    const int64_t h = config->hidden_size, i = config->intermediate_size;
    const int64_t embeddings =
        (config->vocab_size + config->max_position_embeddings + config->type_vocab_size) * h +
        2 * h;
    const int64_t layer = 4 * (h * h + h) + 2 * h + (i * h + i) + (h * i + h) + 2 * h;
    return 4 * (embeddings + config->num_layers * layer);
}
