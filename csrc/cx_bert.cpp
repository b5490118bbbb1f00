/* cx_bert.cpp: the BERT encoder forward pass over libtorch's ATen, behind the C API of cx_bert.h.
 *
 * The only C++ file of the project. Matrix products go to ATen (BLAS on the CPU, cuBLAS on a
 * GPU) with out= variants into scratch tensors that are grown once and reused, because a fresh
 * 100 MB output per matmul costs 30-50% in page faults. On the CPU the memory-bound steps
 * (embedding gather, residual + LayerNorm, mean pooling) are small fused loops over rows run with
 * at::parallel_for, so each row is read once instead of three times. Every export catches all
 * exceptions and turns them into a cx_status: nothing throws across the C boundary. */
#include "cx_bert.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/version.h>

#include <cmath>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

#ifdef COARCH_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace {

struct Layer {
    at::Tensor qkv_weight;       /* [3H, H]: query (pre-scaled by 1/sqrt(head_dim)), key, value */
    at::Tensor qkv_bias;         /* [3H] */
    at::Tensor attention_output_weight, attention_output_bias; /* [H, H], [H] */
    at::Tensor attention_norm_weight, attention_norm_bias;     /* [H], [H] */
    at::Tensor intermediate_weight, intermediate_bias;         /* [I, H], [I] */
    at::Tensor output_weight, output_bias;                     /* [H, I], [H] */
    at::Tensor output_norm_weight, output_norm_bias;           /* [H], [H] */
};

/* Flat float buffers, grown to the largest batch seen; views are cut from them per batch. */
struct Scratch {
    at::Tensor hidden;       /* [T, H] the residual stream */
    at::Tensor qkv;          /* [T, 3H] */
    at::Tensor heads;        /* [3, B*heads, L, head_dim]: q, k, v in head-major layout */
    at::Tensor scores;       /* [B*heads, L, L] attention scores, softmax in place */
    at::Tensor mask;         /* [B*heads, 1, L] 0 for tokens, -inf-like for padding */
    at::Tensor context;      /* [T, H] attention output gathered back to token-major */
    at::Tensor projected;    /* [T, H] output of a dense layer before residual + norm */
    at::Tensor intermediate; /* [T, I] */
    at::Tensor ids;          /* [T] int64 token ids (device) */
};

}  // namespace

struct cx_bert {
    cx_bert_config config;
    at::Device device{at::kCPU};
    at::Tensor word_embeddings, position_embeddings, token_type_embeddings; /* [V,H] [P,H] [T,H] */
    at::Tensor embedding_norm_weight, embedding_norm_bias;                 /* [H], [H] */
    std::vector<Layer> layers;
    Scratch scratch;
};

namespace {

constexpr float kMaskedScore = -1e30f; /* exp() underflows to exactly 0, like HF's finfo.min */

cx_status fail(cx_error *err, cx_status status, const char *what, const char *why)
{
    return cx_error_set(err, status, "%s: %s", what, why);
}

/* Runs `body`, turning any exception into a status with libtorch's message. */
template <typename Body>
cx_status guarded(cx_error *err, const char *what, Body &&body)
{
    try {
        return body();
    } catch (const c10::Error &e) {
        return fail(err, CX_ERR_BACKEND, what, e.what_without_backtrace());
    } catch (const std::bad_alloc &) {
        return fail(err, CX_ERR_NOMEM, what, "out of memory");
    } catch (const std::exception &e) {
        return fail(err, CX_ERR_BACKEND, what, e.what());
    } catch (...) {
        return fail(err, CX_ERR_BACKEND, what, "unknown C++ exception");
    }
}

at::Tensor wrap(const float *data, at::IntArrayRef shape, at::Device device)
{
    /* from_blob does not copy or own: the cx_model keeps the mapping alive. The const_cast is
     * safe because inference never writes to weights. */
    at::Tensor view = at::from_blob(const_cast<float *>(data), shape, at::kFloat);
    return device.is_cpu() ? view : view.to(device);
}

/* A view of `count` elements at the start of `buffer`, regrown when too small. */
at::Tensor take(at::Tensor &buffer, int64_t count, at::IntArrayRef shape, at::ScalarType type,
                at::Device device)
{
    if (!buffer.defined() || buffer.numel() < count)
        buffer = at::empty({count}, at::TensorOptions().dtype(type).device(device));
    return buffer.narrow(0, 0, count).view(shape);
}

/* rows[r] = LayerNorm(rows[r] + residual[r]) * gamma + beta, in place, for [rows, width]. */
void add_layer_norm_cpu(at::Tensor &rows, const at::Tensor *residual, const at::Tensor &gamma,
                        const at::Tensor &beta, double eps)
{
    const int64_t count = rows.size(0), width = rows.size(1);
    float *data = rows.data_ptr<float>();
    const float *add = residual != nullptr ? residual->data_ptr<float>() : nullptr;
    const float *g = gamma.data_ptr<float>(), *b = beta.data_ptr<float>();
    at::parallel_for(0, count, 16, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
            float *row = data + r * width;
            if (add != nullptr) {
                const float *other = add + r * width;
                for (int64_t i = 0; i < width; ++i)
                    row[i] += other[i];
            }
            float sum = 0.0f;
            for (int64_t i = 0; i < width; ++i)
                sum += row[i];
            const float mean = sum / (float)width;
            float squares = 0.0f;
            for (int64_t i = 0; i < width; ++i) {
                const float centred = row[i] - mean;
                squares += centred * centred;
            }
            const float inverse = 1.0f / std::sqrt(squares / (float)width + (float)eps);
            for (int64_t i = 0; i < width; ++i)
                row[i] = (row[i] - mean) * inverse * g[i] + b[i];
        }
    });
}

void add_layer_norm(at::Tensor &rows, const at::Tensor *residual, const at::Tensor &gamma,
                    const at::Tensor &beta, double eps)
{
    if (rows.is_cpu()) {
        add_layer_norm_cpu(rows, residual, gamma, beta, eps);
        return;
    }
    if (residual != nullptr)
        rows.add_(*residual);
    rows.copy_(at::layer_norm(rows, {rows.size(1)}, gamma, beta, eps));
}

/* hidden[b*L + l] = LayerNorm(word[ids] + position[l] + token_type[0]). */
void embed(cx_bert &bert, at::Tensor &hidden, const at::Tensor &ids, int64_t batch,
           int64_t seq_len)
{
    const cx_bert_config &cfg = bert.config;
    const int64_t width = cfg.hidden_size;
    if (!hidden.is_cpu()) {
        at::Tensor rows = at::embedding(bert.word_embeddings, ids).view({batch, seq_len, width});
        rows.add_(bert.position_embeddings.narrow(0, 0, seq_len).unsqueeze(0));
        rows.add_(bert.token_type_embeddings[0]);
        hidden.copy_(rows.view({batch * seq_len, width}));
        add_layer_norm(hidden, nullptr, bert.embedding_norm_weight, bert.embedding_norm_bias,
                       cfg.layer_norm_eps);
        return;
    }
    const float *word = bert.word_embeddings.data_ptr<float>();
    const float *position = bert.position_embeddings.data_ptr<float>();
    const float *token_type = bert.token_type_embeddings.data_ptr<float>();
    const int64_t *id = ids.data_ptr<int64_t>();
    float *out = hidden.data_ptr<float>();
    at::parallel_for(0, batch * seq_len, 64, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
            const float *w = word + id[t] * width;
            const float *p = position + (t % seq_len) * width;
            float *row = out + t * width;
            for (int64_t i = 0; i < width; ++i)
                row[i] = w[i] + p[i] + token_type[i];
        }
    });
    add_layer_norm_cpu(hidden, nullptr, bert.embedding_norm_weight, bert.embedding_norm_bias,
                       cfg.layer_norm_eps);
}

/* out[b] = normalise(mean of hidden[b, :lengths[b]]) written to host memory. */
void pool(const at::Tensor &hidden_device, const int32_t *lengths, int64_t batch, int64_t seq_len,
          float *out)
{
    const at::Tensor hidden = hidden_device.is_cpu() ? hidden_device : hidden_device.cpu();
    const int64_t width = hidden.size(1);
    const float *data = hidden.data_ptr<float>();
    at::parallel_for(0, batch, 4, [&](int64_t begin, int64_t end) {
        std::vector<double> sum((size_t)width);
        for (int64_t b = begin; b < end; ++b) {
            std::fill(sum.begin(), sum.end(), 0.0);
            for (int64_t l = 0; l < lengths[b]; ++l) {
                const float *row = data + (b * seq_len + l) * width;
                for (int64_t i = 0; i < width; ++i)
                    sum[(size_t)i] += row[i];
            }
            double norm = 0.0;
            for (int64_t i = 0; i < width; ++i) {
                sum[(size_t)i] /= (double)lengths[b];
                norm += sum[(size_t)i] * sum[(size_t)i];
            }
            const double scale = 1.0 / std::max(std::sqrt(norm), 1e-12);
            for (int64_t i = 0; i < width; ++i)
                out[b * width + i] = (float)(sum[(size_t)i] * scale);
        }
    });
}

void fill_mask(at::Tensor &mask, const int32_t *lengths, int64_t batch, int64_t heads,
               int64_t seq_len)
{
    at::Tensor host = mask.is_cpu() ? mask : at::empty(mask.sizes(), at::kFloat);
    float *data = host.data_ptr<float>();
    for (int64_t b = 0; b < batch; ++b)
        for (int64_t h = 0; h < heads; ++h) {
            float *row = data + (b * heads + h) * seq_len;
            for (int64_t l = 0; l < seq_len; ++l)
                row[l] = l < lengths[b] ? 0.0f : kMaskedScore;
        }
    if (!mask.is_cpu())
        mask.copy_(host);
}

/* One encoder layer over hidden [T, H] in place. */
void encoder_layer(cx_bert &bert, const Layer &layer, int64_t batch, int64_t seq_len)
{
    const cx_bert_config &cfg = bert.config;
    Scratch &s = bert.scratch;
    const at::Device device = bert.device;
    const int64_t tokens = batch * seq_len, width = cfg.hidden_size, heads = cfg.num_heads;
    const int64_t head_dim = width / heads, groups = batch * heads;

    at::Tensor hidden = take(s.hidden, tokens * width, {tokens, width}, at::kFloat, device);
    at::Tensor qkv = take(s.qkv, tokens * 3 * width, {tokens, 3 * width}, at::kFloat, device);
    at::addmm_out(qkv, layer.qkv_bias, hidden, layer.qkv_weight.t());

    /* [T, 3H] -> [3, B, heads, L, head_dim]: one copy so the batched products see contiguous
     * per-head matrices. */
    at::Tensor split = take(s.heads, 3 * tokens * width, {3, batch, heads, seq_len, head_dim},
                            at::kFloat, device);
    split.copy_(qkv.view({batch, seq_len, 3, heads, head_dim}).permute({2, 0, 3, 1, 4}));
    at::Tensor query = split[0].view({groups, seq_len, head_dim});
    at::Tensor key = split[1].view({groups, seq_len, head_dim});
    at::Tensor value = split[2].view({groups, seq_len, head_dim});

    /* scores [groups, L, L] = mask + q k^T (q is pre-scaled); softmax over keys in place. */
    at::Tensor mask = s.mask.narrow(0, 0, groups * seq_len).view({groups, 1, seq_len});
    at::Tensor scores = take(s.scores, groups * seq_len * seq_len, {groups, seq_len, seq_len},
                             at::kFloat, device);
    at::baddbmm_out(scores, mask.expand({groups, seq_len, seq_len}), query, key.transpose(1, 2));
    at::_softmax_out(scores, scores, -1, false);

    /* context [groups, L, head_dim] into the query slot, then back to token-major [T, H]. */
    at::bmm_out(query, scores, value);
    at::Tensor context = take(s.context, tokens * width, {tokens, width}, at::kFloat, device);
    context.view({batch, seq_len, heads, head_dim})
        .copy_(query.view({batch, heads, seq_len, head_dim}).permute({0, 2, 1, 3}));

    at::Tensor projected = take(s.projected, tokens * width, {tokens, width}, at::kFloat, device);
    at::addmm_out(projected, layer.attention_output_bias, context,
                  layer.attention_output_weight.t());
    add_layer_norm(hidden, &projected, layer.attention_norm_weight, layer.attention_norm_bias,
                   cfg.layer_norm_eps);

    const int64_t inner = cfg.intermediate_size;
    at::Tensor intermediate =
        take(s.intermediate, tokens * inner, {tokens, inner}, at::kFloat, device);
    at::addmm_out(intermediate, layer.intermediate_bias, hidden, layer.intermediate_weight.t());
    at::gelu_(intermediate); /* erf form, as BERT's "gelu" */
    at::addmm_out(projected, layer.output_bias, intermediate, layer.output_weight.t());
    add_layer_norm(hidden, &projected, layer.output_norm_weight, layer.output_norm_bias,
                   cfg.layer_norm_eps);
}

Layer make_layer(const cx_bert_config &cfg, const cx_bert_layer_weights &w, at::Device device)
{
    const int64_t h = cfg.hidden_size, inner = cfg.intermediate_size;
    const double scale = 1.0 / std::sqrt((double)(h / cfg.num_heads));
    const at::Device cpu(at::kCPU);
    Layer layer;
    /* Fusing q, k and v into one [3H, H] product reads the activations once instead of three
     * times; folding 1/sqrt(head_dim) into q saves a pass over the scores. */
    layer.qkv_weight = at::cat({wrap(w.query_weight, {h, h}, cpu) * scale,
                                wrap(w.key_weight, {h, h}, cpu), wrap(w.value_weight, {h, h}, cpu)})
                           .to(device);
    layer.qkv_bias = at::cat({wrap(w.query_bias, {h}, cpu) * scale, wrap(w.key_bias, {h}, cpu),
                              wrap(w.value_bias, {h}, cpu)})
                         .to(device);
    layer.attention_output_weight = wrap(w.attention_output_weight, {h, h}, device);
    layer.attention_output_bias = wrap(w.attention_output_bias, {h}, device);
    layer.attention_norm_weight = wrap(w.attention_norm_weight, {h}, device);
    layer.attention_norm_bias = wrap(w.attention_norm_bias, {h}, device);
    layer.intermediate_weight = wrap(w.intermediate_weight, {inner, h}, device);
    layer.intermediate_bias = wrap(w.intermediate_bias, {inner}, device);
    layer.output_weight = wrap(w.output_weight, {h, inner}, device);
    layer.output_bias = wrap(w.output_bias, {h}, device);
    layer.output_norm_weight = wrap(w.output_norm_weight, {h}, device);
    layer.output_norm_bias = wrap(w.output_norm_bias, {h}, device);
    return layer;
}

int64_t held_bytes(const at::Tensor &tensor)
{
    return tensor.defined() ? (int64_t)tensor.nbytes() : 0;
}

}  // namespace

extern "C" {

cx_bert *cx_bert_new(const cx_bert_config *config, const cx_bert_weights *weights,
                     cx_device device, cx_error *err)
{
    if (config == nullptr || weights == nullptr) {
        cx_error_set(err, CX_ERR_ARGUMENT, "cannot create the encoder: no model");
        return nullptr;
    }
    if (device == CX_DEVICE_CUDA && !cx_backend_cuda_available()) {
        cx_error_set(err, CX_ERR_ARGUMENT,
                     "cannot create the encoder (cuda): this libtorch has no CUDA device");
        return nullptr;
    }
    cx_bert *bert = new (std::nothrow) cx_bert();
    if (bert == nullptr) {
        cx_error_set(err, CX_ERR_NOMEM, "cannot create the encoder: out of memory");
        return nullptr;
    }
    cx_status status = guarded(err, "cannot create the encoder", [&]() {
        c10::InferenceMode inference;
        const cx_bert_config &cfg = *config;
        const int64_t h = cfg.hidden_size;
        bert->config = cfg;
        bert->device = device == CX_DEVICE_CUDA ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
        bert->word_embeddings = wrap(weights->word_embeddings, {cfg.vocab_size, h}, bert->device);
        bert->position_embeddings =
            wrap(weights->position_embeddings, {cfg.max_position_embeddings, h}, bert->device);
        bert->token_type_embeddings =
            wrap(weights->token_type_embeddings, {cfg.type_vocab_size, h}, bert->device);
        bert->embedding_norm_weight = wrap(weights->embedding_norm_weight, {h}, bert->device);
        bert->embedding_norm_bias = wrap(weights->embedding_norm_bias, {h}, bert->device);
        bert->layers.reserve((size_t)cfg.num_layers);
        for (int64_t i = 0; i < cfg.num_layers; ++i)
            bert->layers.push_back(make_layer(cfg, weights->layers[i], bert->device));
        return CX_OK;
    });
    if (status != CX_OK) {
        delete bert;
        return nullptr;
    }
    return bert;
}

void cx_bert_free(cx_bert *bert)
{
    try {
        delete bert;
    } catch (...) {
        /* Destructors of tensors do not throw in practice; never let one escape to C. */
    }
}

cx_status cx_bert_forward(cx_bert *bert, const int32_t *ids, const int32_t *lengths,
                          int64_t batch, int64_t seq_len, float *out, cx_error *err)
{
    const cx_bert_config &cfg = bert->config;
    if (batch < 1 || seq_len < 1 || seq_len > cfg.max_position_embeddings)
        return cx_error_set(err, CX_ERR_ARGUMENT,
                            "cannot encode a batch of %lld x %lld tokens: the model takes 1 to "
                            "%lld tokens per text",
                            (long long)batch, (long long)seq_len,
                            (long long)cfg.max_position_embeddings);
    for (int64_t b = 0; b < batch; ++b)
        if (lengths[b] < 1 || lengths[b] > seq_len)
            return cx_error_set(err, CX_ERR_ARGUMENT, "cannot encode: row %lld has length %d",
                                (long long)b, lengths[b]);
    for (int64_t t = 0; t < batch * seq_len; ++t)
        if (ids[t] < 0 || ids[t] >= cfg.vocab_size)
            return cx_error_set(err, CX_ERR_ARGUMENT,
                                "cannot encode: token id %d is outside the vocabulary of %lld",
                                ids[t], (long long)cfg.vocab_size);

    return guarded(err, "forward pass failed", [&]() {
        c10::InferenceMode inference;
        Scratch &s = bert->scratch;
        const int64_t tokens = batch * seq_len, width = cfg.hidden_size;

        at::Tensor host_ids = take(s.ids, tokens, {tokens}, at::kLong, at::Device(at::kCPU));
        int64_t *id = host_ids.data_ptr<int64_t>();
        for (int64_t t = 0; t < tokens; ++t)
            id[t] = ids[t];
        at::Tensor device_ids = bert->device.is_cpu() ? host_ids : host_ids.to(bert->device);

        const int64_t groups = batch * cfg.num_heads;
        take(s.mask, groups * seq_len, {groups, 1, seq_len}, at::kFloat, bert->device);
        at::Tensor mask = s.mask.narrow(0, 0, groups * seq_len).view({groups, 1, seq_len});
        fill_mask(mask, lengths, batch, cfg.num_heads, seq_len);

        at::Tensor hidden = take(s.hidden, tokens * width, {tokens, width}, at::kFloat,
                                 bert->device);
        embed(*bert, hidden, device_ids, batch, seq_len);
        for (const Layer &layer : bert->layers)
            encoder_layer(*bert, layer, batch, seq_len);
        pool(hidden, lengths, batch, seq_len, out);
        return CX_OK;
    });
}

void cx_bert_release_scratch(cx_bert *bert)
{
    if (bert != nullptr)
        bert->scratch = Scratch();
}

int64_t cx_bert_scratch_bytes(const cx_bert_config *config, int64_t batch, int64_t seq_len)
{
    /* Mirrors the take() calls above: hidden, qkv (3), heads (3), context, projected: 9 x [T, H];
     * intermediate [T, I]; scores [B*heads, L, L]; mask [B*heads, L]; ids [T] int64. */
    const int64_t tokens = batch * seq_len, groups = batch * config->num_heads;
    const int64_t floats = 9 * tokens * config->hidden_size + tokens * config->intermediate_size +
                           groups * seq_len * seq_len + groups * seq_len;
    return floats * (int64_t)sizeof(float) + tokens * (int64_t)sizeof(int64_t);
}

int64_t cx_bert_scratch_held(const cx_bert *bert)
{
    const Scratch &s = bert->scratch;
    return held_bytes(s.hidden) + held_bytes(s.qkv) + held_bytes(s.heads) + held_bytes(s.scores) +
           held_bytes(s.mask) + held_bytes(s.context) + held_bytes(s.projected) +
           held_bytes(s.intermediate) + held_bytes(s.ids);
}

cx_device cx_bert_device(const cx_bert *bert)
{
    return bert->device.is_cuda() ? CX_DEVICE_CUDA : CX_DEVICE_CPU;
}

const cx_bert_config *cx_bert_config_of(const cx_bert *bert)
{
    return &bert->config;
}

cx_status cx_backend_set_threads(int threads, cx_error *err)
{
    if (threads < 1)
        return cx_error_set(err, CX_ERR_ARGUMENT, "threads must be at least 1, not %d", threads);
    return guarded(err, "cannot set libtorch's thread count", [&]() {
        at::set_num_threads(threads);
        return CX_OK;
    });
}

int cx_backend_threads(void)
{
    try {
        return at::get_num_threads();
    } catch (...) {
        return 1;
    }
}

const char *cx_backend_version(void)
{
    return TORCH_VERSION;
}

int cx_backend_cuda_available(void)
{
#ifdef COARCH_WITH_CUDA
    try {
        return c10::cuda::device_count() > 0 ? 1 : 0;
    } catch (...) {
        return 0;
    }
#else
    return 0;
#endif
}

cx_status cx_backend_cuda_empty_cache(cx_error *err)
{
#ifdef COARCH_WITH_CUDA
    if (!cx_backend_cuda_available())
        return CX_OK;
    return guarded(err, "cannot release the CUDA cache", [&]() {
        c10::cuda::CUDACachingAllocator::emptyCache();
        return CX_OK;
    });
#else
    (void)err;
    return CX_OK;
#endif
}

cx_status cx_backend_cuda_memory(int64_t *reserved_bytes, int64_t *total_bytes, cx_error *err)
{
    *reserved_bytes = 0;
    *total_bytes = 0;
#ifdef COARCH_WITH_CUDA
    if (!cx_backend_cuda_available())
        return CX_OK;
    return guarded(err, "cannot read CUDA memory", [&]() {
        const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
        *reserved_bytes = stats.reserved_bytes[0].current;
        size_t free_bytes = 0, total = 0;
        C10_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
        *total_bytes = (int64_t)total;
        return CX_OK;
    });
#else
    (void)err;
    return CX_OK;
#endif
}

}  // extern "C"
