/* cx_config.c: a BERT model's shape and options from its parsed JSON config files, each value
 * checked against bounds that keep every later size product from overflowing. */
#include "cx_config.h"

#include <inttypes.h>
#include <string.h>

/* Sanity bounds on config.json: far above any BERT, low enough that products cannot overflow. */
#define MAX_VOCAB ((int64_t)1 << 24)
#define MAX_HIDDEN ((int64_t)1 << 16)
#define MAX_LAYERS ((int64_t)1024)
#define MAX_INTERMEDIATE ((int64_t)1 << 18)
#define MAX_POSITIONS ((int64_t)1 << 20)
#define MAX_TYPE_VOCAB ((int64_t)1 << 16)
#define DEFAULT_MAX_SEQ_LENGTH 512

/* Reads integer `key` of config.json into *out, requiring 1 <= value <= max. A missing or null
 * key takes `fallback`, or is an error when fallback is 0. */
static cx_status config_int(const cx_json_value *root, const char *key, int64_t fallback,
                            int64_t max, int64_t *out, cx_error *err)
{
    const cx_json_value *value = cx_json_get(root, key);
    if (value == NULL || cx_json_type_of(value) == CX_JSON_NULL) {
        if (fallback == 0)
            return cx_error_set(err, CX_ERR_MODEL,
                                "invalid model config (config.json): %s is missing", key);
        *out = fallback;
        return CX_OK;
    }
    int64_t number;
    if (!cx_json_as_int64(value, &number))
        return cx_error_set(err, CX_ERR_MODEL,
                            "invalid model config (config.json): %s must be an integer", key);
    if (number < 1 || number > max)
        return cx_error_set(err, CX_ERR_MODEL,
                            "invalid model config (config.json): %s is %" PRId64
                            ", expected 1 to %" PRId64,
                            key, number, max);
    *out = number;
    return CX_OK;
}

/* Requires string `key`, when present, to equal `expected`: the encoder implements only that. */
static cx_status config_require_string(const cx_json_value *root, const char *key,
                                       const char *expected, cx_error *err)
{
    const cx_json_value *value = cx_json_get(root, key);
    if (value == NULL || cx_json_type_of(value) == CX_JSON_NULL)
        return CX_OK;
    const char *text;
    if (!cx_json_as_string(value, &text))
        return cx_error_set(err, CX_ERR_MODEL,
                            "invalid model config (config.json): %s must be a string", key);
    if (strcmp(text, expected) != 0)
        return cx_error_set(err, CX_ERR_MODEL,
                            "unsupported model (config.json): %s is \"%.64s\", only \"%s\" is "
                            "implemented",
                            key, text, expected);
    return CX_OK;
}

cx_status cx_config_read_bert(const cx_json_value *root, cx_bert_config *config, cx_error *err)
{
    cx_status status;
    if ((status = config_int(root, "vocab_size", 0, MAX_VOCAB, &config->vocab_size, err)) ||
        (status = config_int(root, "hidden_size", 0, MAX_HIDDEN, &config->hidden_size, err)) ||
        (status = config_int(root, "num_hidden_layers", 0, MAX_LAYERS, &config->num_layers, err)) ||
        (status = config_int(root, "num_attention_heads", 0, MAX_HIDDEN, &config->num_heads,
                             err)) ||
        (status = config_int(root, "intermediate_size", 0, MAX_INTERMEDIATE,
                             &config->intermediate_size, err)) ||
        (status = config_int(root, "max_position_embeddings", 0, MAX_POSITIONS,
                             &config->max_position_embeddings, err)) ||
        (status = config_int(root, "type_vocab_size", 2, MAX_TYPE_VOCAB, &config->type_vocab_size,
                             err)) ||
        (status = config_require_string(root, "hidden_act", "gelu", err)) ||
        (status = config_require_string(root, "position_embedding_type", "absolute", err)))
        return status;
    if (config->hidden_size % config->num_heads != 0)
        return cx_error_set(err, CX_ERR_MODEL,
                            "invalid model config (config.json): hidden_size %" PRId64
                            " is not a multiple of num_attention_heads %" PRId64,
                            config->hidden_size, config->num_heads);
    config->layer_norm_eps = 1e-12;
    const cx_json_value *eps = cx_json_get(root, "layer_norm_eps");
    if (eps != NULL && cx_json_type_of(eps) != CX_JSON_NULL) {
        double value;
        if (!cx_json_as_double(eps, &value) || !(value > 0.0 && value < 1.0))
            return cx_error_set(err, CX_ERR_MODEL,
                                "invalid model config (config.json): layer_norm_eps must be a "
                                "number between 0 and 1");
        config->layer_norm_eps = value;
    }
    return CX_OK;
}

cx_status cx_config_read_sentence(const cx_json_value *root, cx_bert_config *config,
                                  cx_error *err)
{
    int64_t positions = config->max_position_embeddings;
    if (positions < 2)
        return cx_error_set(err, CX_ERR_MODEL,
                            "invalid model config (config.json): max_position_embeddings %" PRId64
                            " leaves no room for [CLS] and [SEP]",
                            positions);
    config->max_seq_length =
        positions < DEFAULT_MAX_SEQ_LENGTH ? positions : DEFAULT_MAX_SEQ_LENGTH;
    const cx_json_value *value = root != NULL ? cx_json_get(root, "max_seq_length") : NULL;
    if (value == NULL || cx_json_type_of(value) == CX_JSON_NULL)
        return CX_OK;
    int64_t length;
    if (!cx_json_as_int64(value, &length) || length < 2)
        return cx_error_set(err, CX_ERR_MODEL,
                            "invalid model config (sentence_bert_config.json): "
                            "max_seq_length must be an integer >= 2");
    /* a limit beyond the position table would index past it: clamp */
    config->max_seq_length = length < positions ? length : positions;
    return CX_OK;
}

cx_status cx_config_read_tokenizer(const cx_json_value *root, cx_bert_config *config,
                                   cx_error *err)
{
    config->do_lower_case = 1;
    const cx_json_value *value = root != NULL ? cx_json_get(root, "do_lower_case") : NULL;
    if (value != NULL && cx_json_type_of(value) != CX_JSON_NULL &&
        !cx_json_as_bool(value, &config->do_lower_case))
        return cx_error_set(err, CX_ERR_MODEL,
                            "invalid model config (tokenizer_config.json): do_lower_case must "
                            "be true or false");
    return CX_OK;
}
