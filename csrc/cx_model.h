/* cx_model.h: a BERT-family model folder, loaded for inference.
 *
 * A model folder holds config.json (shape), model.safetensors (weights), vocab.txt (read by
 * cx_tokenizer) and optionally sentence_bert_config.json (max_seq_length) and
 * tokenizer_config.json (do_lower_case). The safetensors file is mmap'ed read-only; F32 tensors
 * are used in place, F16/BF16 tensors are converted once into buffers the model owns. Every
 * header field, offset and shape is checked against the file before use, so a lying or
 * truncated file gives an error, never a crash. */
#ifndef COARCH_CX_MODEL_H
#define COARCH_CX_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "cx_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cx_bert_config {
    int64_t vocab_size;              /* config.json vocab_size */
    int64_t hidden_size;             /* hidden_size: width of every token vector (384 for MiniLM) */
    int64_t num_layers;              /* num_hidden_layers */
    int64_t num_heads;               /* num_attention_heads; divides hidden_size */
    int64_t intermediate_size;       /* intermediate_size: feed-forward width */
    int64_t max_position_embeddings; /* rows of the position table */
    int64_t type_vocab_size;         /* rows of the token-type table (>= 1) */
    double layer_norm_eps;           /* layer_norm_eps, default 1e-12 */
    int64_t max_seq_length;          /* sentence_bert_config.json max_seq_length, else
                                        min(512, max_position_embeddings); always <= positions */
    int do_lower_case;               /* tokenizer_config.json do_lower_case, default 1 */
} cx_bert_config;

/* Weights of one encoder layer; shapes in [out, in] order as stored by PyTorch. H = hidden,
 * I = intermediate. All pointers are F32, owned by the cx_model. */
typedef struct cx_bert_layer_weights {
    const float *query_weight, *query_bias;         /* [H, H], [H] */
    const float *key_weight, *key_bias;             /* [H, H], [H] */
    const float *value_weight, *value_bias;         /* [H, H], [H] */
    const float *attention_output_weight;           /* [H, H] */
    const float *attention_output_bias;             /* [H] */
    const float *attention_norm_weight;             /* [H] LayerNorm gamma */
    const float *attention_norm_bias;               /* [H] LayerNorm beta */
    const float *intermediate_weight;               /* [I, H] */
    const float *intermediate_bias;                 /* [I] */
    const float *output_weight;                     /* [H, I] */
    const float *output_bias;                       /* [H] */
    const float *output_norm_weight;                /* [H] */
    const float *output_norm_bias;                  /* [H] */
} cx_bert_layer_weights;

typedef struct cx_bert_weights {
    const float *word_embeddings;       /* [vocab_size, H] */
    const float *position_embeddings;   /* [max_position_embeddings, H] */
    const float *token_type_embeddings; /* [type_vocab_size, H] */
    const float *embedding_norm_weight; /* [H] */
    const float *embedding_norm_bias;   /* [H] */
    const cx_bert_layer_weights *layers; /* [num_layers], owned by the cx_model */
} cx_bert_weights;

typedef struct cx_model cx_model; /* opaque: the mapping, converted buffers, config, weights */

/* Opens the model folder `directory`. Tensor names are accepted with or without the "bert."
 * prefix (BertModel and BertForX checkpoints). Returns NULL and fills `err` when the folder or a
 * file is missing or unreadable (CX_ERR_IO via *status), a file is malformed (CX_ERR_FORMAT), or
 * a tensor is missing or has the wrong shape or dtype (CX_ERR_MODEL); the message names the file
 * and the tensor. `status` may be NULL. The caller owns the result and frees it with
 * cx_model_free. */
cx_model *cx_model_open(const char *directory, cx_status *status, cx_error *err);

/* Unmaps and frees everything; pointers obtained from the model become invalid. NULL is fine. */
void cx_model_free(cx_model *model);

/* Borrowed views, valid until cx_model_free. */
const cx_bert_config *cx_model_config(const cx_model *model);
const cx_bert_weights *cx_model_weights(const cx_model *model);
const char *cx_model_directory(const cx_model *model); /* as passed to cx_model_open */
const char *cx_model_vocab_path(const cx_model *model); /* <directory>/vocab.txt */

#ifdef __cplusplus
}
#endif

#endif
