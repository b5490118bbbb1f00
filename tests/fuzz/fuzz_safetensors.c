/* fuzz_safetensors.c: libFuzzer harness for the safetensors loader (cx_model_open).
 *
 * The input is written as model.safetensors into a folder holding the tiny model's config.json
 * and vocab.txt (fuzz_common.h), then the folder is opened. Any input must give either a model
 * or an error with a message; a model must have every weight of the config's shape, readable to
 * the last float (touching them lets ASan/SEGV catch a pointer outside the mapping or a short
 * buffer). Seeds: tests/fuzz/corpus/safetensors (valid F32/F16/BF16, "bert." prefix, misaligned
 * data), dictionary tests/fuzz/safetensors.dict. */
#include <stdint.h>
#include <string.h>

#include "cx_model.h"
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_make_dir();
    fuzz_write("config.json", TINY_CONFIG, strlen(TINY_CONFIG));
    fuzz_write("vocab.txt", TINY_VOCAB, strlen(TINY_VOCAB));
    return 0;
}

/* Sums every float so that each is read; the sum itself does not matter. */
static volatile float sink;

static void touch(const float *values, int64_t count)
{
    FUZZ_REQUIRE(values != NULL, "a weight pointer is NULL");
    float sum = 0.0f;
    for (int64_t i = 0; i < count; i++)
        sum += values[i];
    sink = sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_write("model.safetensors", data, size);
    cx_error err;
    memset(&err, 0, sizeof err);
    cx_status status = CX_OK;
    cx_model *model = cx_model_open(fuzz_dir, &status, &err);
    if (model == NULL) {
        FUZZ_REQUIRE(status < 0 && err.message[0] != '\0', "failure without status or message");
        FUZZ_REQUIRE(strlen(err.message) < sizeof err.message, "message not terminated");
        return 0;
    }
    FUZZ_REQUIRE(status == CX_OK, "a model with status %d", status);
    const cx_bert_config *c = cx_model_config(model);
    FUZZ_REQUIRE(c->hidden_size == 4 && c->num_layers == 1 && c->intermediate_size == 8,
                 "config changed by the weights file");
    const cx_bert_weights *w = cx_model_weights(model);
    const int64_t H = c->hidden_size, I = c->intermediate_size;
    touch(w->word_embeddings, c->vocab_size * H);
    touch(w->position_embeddings, c->max_position_embeddings * H);
    touch(w->token_type_embeddings, c->type_vocab_size * H);
    touch(w->embedding_norm_weight, H);
    touch(w->embedding_norm_bias, H);
    for (int64_t l = 0; l < c->num_layers; l++) {
        const cx_bert_layer_weights *x = &w->layers[l];
        const float *square[] = {x->query_weight, x->key_weight, x->value_weight,
                                 x->attention_output_weight};
        const float *vectors[] = {
            x->query_bias,
            x->key_bias,
            x->value_bias,
            x->attention_output_bias,
            x->attention_norm_weight,
            x->attention_norm_bias,
            x->output_bias,
            x->output_norm_weight,
            x->output_norm_bias,
        };
        for (size_t k = 0; k < sizeof square / sizeof *square; k++)
            touch(square[k], H * H);
        for (size_t k = 0; k < sizeof vectors / sizeof *vectors; k++)
            touch(vectors[k], H);
        touch(x->intermediate_weight, I * H);
        touch(x->intermediate_bias, I);
        touch(x->output_weight, H * I);
    }
    cx_model_free(model);
    return 0;
}
