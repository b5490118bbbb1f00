/* cx_config.h: a BERT model's configuration (cx_bert_config) from the roots of its JSON files;
 * cx_model.c reads the files and calls these in order.
 *
 * Each fills its part of `config` or returns CX_ERR_MODEL with "invalid model config (<file>):
 * <why>" (or "unsupported model" for an architecture the encoder does not implement). */
#ifndef COARCH_CX_CONFIG_H
#define COARCH_CX_CONFIG_H

#include "cx_error.h"
#include "cx_json.h"
#include "cx_model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* config.json: vocab, hidden, layers, heads (dividing hidden), intermediate, positions and
 * token types, each 1 to a sanity bound (type_vocab_size defaults to 2), layer_norm_eps in
 * (0, 1) (default 1e-12); hidden_act must be "gelu" and position_embedding_type "absolute"
 * where given. */
cx_status cx_config_read_bert(const cx_json_value *root, cx_bert_config *config, cx_error *err);

/* sentence_bert_config.json (root NULL when the file is absent): max_seq_length, at least 2,
 * clamped to the position table; default min(512, max_position_embeddings). Needs the
 * positions from cx_config_read_bert. */
cx_status cx_config_read_sentence(const cx_json_value *root, cx_bert_config *config,
                                  cx_error *err);

/* tokenizer_config.json (root NULL when absent): do_lower_case, default true (uncased BERT). */
cx_status cx_config_read_tokenizer(const cx_json_value *root, cx_bert_config *config,
                                   cx_error *err);

#ifdef __cplusplus
}
#endif

#endif
