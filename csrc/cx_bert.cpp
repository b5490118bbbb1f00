/* cx_bert.cpp: the BERT encoder forward pass over libtorch's ATen, behind the C API of cx_bert.h.
 *
 * C++ because ATen is (cx_backend.cpp is the other such file). A batch is packed: its texts'
 * tokens back to back, no padding. Every token-wise step (dense layers, GELU, residual +
 * LayerNorm) runs over the packed rows. Attention in fp32 runs per text and head over that
 * text's own rows, so padding costs nothing and needs no mask; in bf16 it runs on blocks padded
 * per batch (attend_cpu_low), where batched products pay for the small padding.
 *
 * Threads (CPU): the work is split across ATen's intra-op pool here, by row blocks for the fp32
 * dense products and by (text, head) pairs for fp32 attention, each block one single-threaded
 * BLAS call (OpenBLAS is set to one thread). Left to BLAS's own threading, the small per-head
 * products ran at a fraction of the dense layers' speed. bf16 products go to oneDNN, which
 * splits them over the same pool itself. at::parallel_for is a header template: it runs on one
 * thread unless this file is compiled with OpenMP (setup.py), and its bodies run on threads
 * without this one's InferenceMode (parallel_tensors).
 *
 * Matrix products use out= variants into scratch tensors that are grown once and reused,
 * because a fresh 100 MB output per product costs 30-50% in page faults. The memory-bound steps
 * (embedding gather, residual + LayerNorm, softmax, bf16 bias + GELU, mean pooling) are fused
 * loops over rows: the gather (on CPU) and the pooling here, the others in cx_rows.c. Every
 * export catches all exceptions and turns them into a cx_status: nothing throws across the C
 * boundary. */
#include "cx_bert.h"
#include "cx_backend.h"
#include "cx_footprint.h"
#include "cx_guard.hpp"
#include "cx_rows.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <vector>


namespace {

struct Layer {
    at::Tensor qkv_weight;       /* [3H, H]: query (pre-scaled by 1/sqrt(head_dim)), key, value */
    at::Tensor qkv_bias;         /* [3H] */
    at::Tensor attention_output_weight, attention_output_bias; /* [H, H], [H] */
    at::Tensor attention_norm_weight, attention_norm_bias;     /* [H], [H] */
    at::Tensor intermediate_weight, intermediate_bias;         /* [I, H], [I] */
    at::Tensor gelu_bias; /* [I] fp32: intermediate_bias, added by the bf16 GELU kernel on CPU */
    at::Tensor output_weight, output_bias;                     /* [H, I], [H] */
    at::Tensor output_norm_weight, output_norm_bias;           /* [H], [H] */
};

/* Flat buffers, grown to the largest batch seen; views are cut from them per batch.
 * T = tokens of the batch (packed), L = its longest text, P = threads. */
struct Scratch {
    at::Tensor hidden;       /* [T, H] the residual stream */
    at::Tensor qkv;          /* [T, 3H] query | key | value of every token */
    at::Tensor scores;       /* [P, L * L] one attention matrix per thread, softmax in place */
    at::Tensor context;      /* [T, H] attention output, token-major */
    at::Tensor projected;    /* [T, H] output of a dense layer before residual + norm */
    at::Tensor intermediate; /* [T, I] */
    at::Tensor ids;          /* [T] int64 token ids */
    at::Tensor positions;    /* [T] int64 position of each token in its text */
    /* bf16 only: everything but the residual stream (hidden, fp32) is bf16, and the fp32
     * qkv, context, projected, intermediate and scores above are not used. */
    at::Tensor hidden_low;       /* [T, H] the residual stream rounded, input of the products */
    at::Tensor qkv_low;          /* [T, 3H] */
    at::Tensor heads_low;        /* [4, texts, heads, L, d] q, k, v, context, head-major */
    at::Tensor scores_low;       /* [group * heads, L, L] (attend_cpu_low) */
    at::Tensor context_low;      /* [T, H] */
    at::Tensor projected_low;    /* [T, H] */
    at::Tensor intermediate_low; /* [T, I] */
};

/* Where each text of the batch lies in the packed rows. */
struct Packing {
    const int32_t *lengths = nullptr; /* [batch] tokens of each text */
    std::vector<int64_t> offsets;     /* [batch] first row of each text */
    int64_t batch = 0, tokens = 0, longest = 0;
};

}  // namespace

struct cx_bert {
    cx_bert_config config;
    at::Device device{at::kCPU};
    at::ScalarType dense_type = at::kFloat; /* kBFloat16 in CX_PRECISION_BF16 */
    at::Tensor word_embeddings, position_embeddings, token_type_embeddings; /* [V,H] [P,H] [T,H] */
    at::Tensor embedding_norm_weight, embedding_norm_bias;                 /* [H], [H] */
    std::vector<Layer> layers;
    Scratch scratch;
};

namespace {

/* at::parallel_for for a body that uses tensors. InferenceMode is thread-local, and the pool's
 * other threads run the body without it: an in-place op on an inference tensor there throws. */
template <typename Body>
void parallel_tensors(int64_t begin, int64_t end, int64_t grain, const Body &body)
{
    at::parallel_for(begin, end, grain, [&](int64_t first, int64_t last) {
        c10::InferenceMode inference;
        body(first, last);
    });
}

/* Rows per task when splitting a dense product: enough for BLAS to run at full speed. */
constexpr int64_t kRowGrain = 256;

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

/* rows[r] = LayerNorm(rows[r] + residual[r]) * gamma + beta, in place, for [rows, width]; the
 * residual is fp32 or bf16 (or undefined: none); when `low` is defined the result is also
 * written there in bf16 (cx_rows.h). Rows are split across the intra-op pool. */
void add_layer_norm_cpu(at::Tensor &rows, const at::Tensor &residual, const at::Tensor &gamma,
                        const at::Tensor &beta, double eps, at::Tensor *low = nullptr)
{
    const int64_t count = rows.size(0), width = rows.size(1);
    float *data = rows.data_ptr<float>();
    const bool has_residual = residual.defined();
    const float *add = has_residual && residual.scalar_type() == at::kFloat
                           ? residual.data_ptr<float>()
                           : nullptr;
    const cx_bf16 *add_low = has_residual && residual.scalar_type() == at::kBFloat16
                                 ? reinterpret_cast<const cx_bf16 *>(residual.data_ptr())
                                 : nullptr;
    cx_bf16 *out_low = low != nullptr ? reinterpret_cast<cx_bf16 *>(low->data_ptr()) : nullptr;
    const float *g = gamma.data_ptr<float>(), *b = beta.data_ptr<float>();
    at::parallel_for(0, count, 16, [&](int64_t begin, int64_t end) {
        const int64_t first = begin * width;
        cx_rows_add_layer_norm(data + first, add != nullptr ? add + first : nullptr,
                               add_low != nullptr ? add_low + first : nullptr, g, b, (float)eps,
                               end - begin, width, out_low != nullptr ? out_low + first : nullptr);
    });
}

void add_layer_norm(at::Tensor &rows, const at::Tensor &residual, const at::Tensor &gamma,
                    const at::Tensor &beta, double eps, at::Tensor *low = nullptr)
{
    if (rows.is_cpu()) {
        add_layer_norm_cpu(rows, residual, gamma, beta, eps, low);
        return;
    }
    /* bf16 buffers have product_rows() rows, more than `rows`: only the first ones are real. */
    const int64_t count = rows.size(0);
    if (residual.defined())
        rows.add_(residual.narrow(0, 0, count));
    rows.copy_(at::layer_norm(rows, {rows.size(1)}, gamma, beta, eps));
    if (low != nullptr)
        low->narrow(0, 0, count).copy_(rows);
}

/* hidden[t] = LayerNorm(word[ids[t]] + position[positions[t]] + token_type[0]), and the same in
 * bf16 into `low` when given. */
void embed(cx_bert &bert, at::Tensor &hidden, const at::Tensor &ids, const at::Tensor &positions,
           at::Tensor *low)
{
    const cx_bert_config &cfg = bert.config;
    const int64_t width = cfg.hidden_size, tokens = hidden.size(0);
    if (!hidden.is_cpu()) {
        at::Tensor rows = at::embedding(bert.word_embeddings, ids);
        rows.add_(at::embedding(bert.position_embeddings, positions));
        rows.add_(bert.token_type_embeddings[0]);
        hidden.copy_(rows);
        add_layer_norm(hidden, at::Tensor(), bert.embedding_norm_weight,
                       bert.embedding_norm_bias, cfg.layer_norm_eps, low);
        return;
    }
    const float *word = bert.word_embeddings.data_ptr<float>();
    const float *position = bert.position_embeddings.data_ptr<float>();
    const float *token_type = bert.token_type_embeddings.data_ptr<float>();
    const int64_t *id = ids.data_ptr<int64_t>(), *at_position = positions.data_ptr<int64_t>();
    float *out = hidden.data_ptr<float>();
    at::parallel_for(0, tokens, 64, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
            const float *w = word + id[t] * width;
            const float *p = position + at_position[t] * width;
            float *row = out + t * width;
            for (int64_t i = 0; i < width; ++i)
                row[i] = w[i] + p[i] + token_type[i];
        }
    });
    add_layer_norm_cpu(hidden, at::Tensor(), bert.embedding_norm_weight,
                       bert.embedding_norm_bias, cfg.layer_norm_eps, low);
}

/* out[b] = normalise(mean of text b's rows of hidden), written to host memory. */
void pool(const at::Tensor &hidden_device, const Packing &packing, float *out)
{
    const at::Tensor hidden = hidden_device.is_cpu() ? hidden_device : hidden_device.cpu();
    const int64_t width = hidden.size(1);
    const float *data = hidden.data_ptr<float>();
    at::parallel_for(0, packing.batch, 4, [&](int64_t begin, int64_t end) {
        std::vector<double> sum((size_t)width);
        for (int64_t b = begin; b < end; ++b) {
            std::fill(sum.begin(), sum.end(), 0.0);
            const float *rows = data + packing.offsets[(size_t)b] * width;
            for (int64_t l = 0; l < packing.lengths[b]; ++l)
                for (int64_t i = 0; i < width; ++i)
                    sum[(size_t)i] += rows[l * width + i];
            double norm = 0.0;
            for (int64_t i = 0; i < width; ++i) {
                sum[(size_t)i] /= (double)packing.lengths[b];
                norm += sum[(size_t)i] * sum[(size_t)i];
            }
            const double scale = 1.0 / std::max(std::sqrt(norm), 1e-12);
            for (int64_t i = 0; i < width; ++i)
                out[b * width + i] = (float)(sum[(size_t)i] * scale);
        }
    });
}

/* out [T, O] = in [T, K] weight^T + bias, fp32 split by row blocks across the intra-op pool. */
void dense(at::Tensor &out, const at::Tensor &in, const at::Tensor &weight, const at::Tensor &bias)
{
    if (!out.is_cpu() || out.scalar_type() == at::kBFloat16) {
        /* bf16 goes to oneDNN, which splits the product over the same OpenMP pool itself;
         * row blocks would give it a new shape, and a new kernel to build, per block. */
        at::addmm_out(out, bias, in, weight.t());
        return;
    }
    parallel_tensors(0, in.size(0), kRowGrain, [&](int64_t begin, int64_t end) {
        at::Tensor rows = out.narrow(0, begin, end - begin);
        at::addmm_out(rows, bias, in.narrow(0, begin, end - begin), weight.t());
    });
}

/* context[text rows, head columns] = softmax(q k^T) v for every (text, head); q is pre-scaled.
 * q, k, v and the context block are strided views into the packed rows: BLAS reads and writes
 * them in place through its leading dimension. */
void attend_cpu(Scratch &s, const at::Tensor &qkv, at::Tensor &context, const Packing &packing,
                int64_t heads, int64_t width)
{
    const int64_t head_dim = width / heads, longest = packing.longest;
    const int64_t threads = at::get_num_threads();
    at::Tensor scores = take(s.scores, threads * longest * longest, {threads, longest * longest},
                             at::kFloat, at::Device(at::kCPU));
    parallel_tensors(0, packing.batch * heads, 1, [&](int64_t begin, int64_t end) {
        at::Tensor own = scores[at::get_thread_num()];
        for (int64_t task = begin; task < end; ++task) {
            const int64_t b = task / heads, h = task % heads;
            const int64_t length = packing.lengths[b], first = packing.offsets[(size_t)b];
            at::Tensor rows = qkv.narrow(0, first, length);
            at::Tensor query = rows.narrow(1, h * head_dim, head_dim); /* [len, d] */
            at::Tensor key = rows.narrow(1, width + h * head_dim, head_dim);
            at::Tensor value = rows.narrow(1, 2 * width + h * head_dim, head_dim);
            at::Tensor weights = own.narrow(0, 0, length * length).view({length, length});
            at::mm_out(weights, query, key.t());
            cx_rows_softmax(weights.data_ptr<float>(), length, length);
            at::Tensor out = context.narrow(0, first, length).narrow(1, h * head_dim, head_dim);
            at::mm_out(out, weights, value);
        }
    });
}

/* bf16: the batch's q, k and v are copied into head-major blocks padded to its longest text
 * (attention_rows), [3, texts, heads, L, d], so that attention is two batched products per group:
 * oneDNN runs one [group x heads] product twice as fast as a product per text. Softmax (fp32
 * inside, cx_rows.c) covers each text's own length and zeroes the padding keys, whose value
 * rows are zeroed too: padding changes nothing, and padded query rows are never copied back.
 * Texts of a batch have close lengths (they are sorted), so the padding is small; groups keep
 * the score matrices under CX_FOOTPRINT_SCORE_BYTES whatever the batch (cx_footprint.h). */
int64_t attention_rows(const Packing &packing)
{
    return cx_footprint_attention_rows(packing.longest);
}

void attend_cpu_low(Scratch &s, const at::Tensor &qkv, at::Tensor &context, const Packing &packing,
                    int64_t heads, int64_t width)
{
    const int64_t head_dim = width / heads, longest = attention_rows(packing);
    const int64_t texts = packing.batch;
    const at::Device cpu(at::kCPU);
    at::Tensor blocks = take(s.heads_low, 4 * texts * heads * longest * head_dim,
                             {4, texts, heads, longest, head_dim}, at::kBFloat16, cpu);
    /* Blocks of text b: part p (q, k, v, context) at p * part + b * per_text. */
    cx_bf16 *block_data = reinterpret_cast<cx_bf16 *>(blocks.data_ptr());
    const int64_t per_text = heads * longest * head_dim, part = texts * per_text;
    const cx_bf16 *qkv_data = reinterpret_cast<const cx_bf16 *>(qkv.data_ptr());
    at::parallel_for(0, texts, 1, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b)
            cx_rows_split_heads_bf16(qkv_data + packing.offsets[(size_t)b] * 3 * width,
                                     packing.lengths[b], 3, heads, head_dim,
                                     block_data + b * per_text, part, longest);
    });
    const int64_t group = std::min(texts, cx_footprint_score_group(heads, longest));
    const int64_t square = longest * longest;
    at::Tensor scores = take(s.scores_low, group * heads * square,
                             {group * heads, longest, longest}, at::kBFloat16, cpu);
    for (int64_t g = 0; g < texts; g += group) {
        const int64_t count = std::min(group, texts - g);
        auto heads_of = [&](int64_t part) {
            return blocks[part].narrow(0, g, count).view({count * heads, longest, head_dim});
        };
        at::Tensor weights = scores.narrow(0, 0, count * heads);
        at::bmm_out(weights, heads_of(0), heads_of(1).transpose(1, 2));
        cx_bf16 *rows = reinterpret_cast<cx_bf16 *>(weights.data_ptr());
        at::parallel_for(0, count * heads, 1, [&](int64_t begin, int64_t end) {
            std::vector<float> work((size_t)longest);
            for (int64_t t = begin; t < end; ++t) {
                const int64_t length = packing.lengths[g + t / heads];
                cx_rows_softmax_bf16(rows + t * square, length, length, longest, work.data());
            }
        });
        at::Tensor out = heads_of(3);
        at::bmm_out(out, weights, heads_of(2));
    }
    cx_bf16 *context_data = reinterpret_cast<cx_bf16 *>(context.data_ptr());
    at::parallel_for(0, texts, 1, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b)
            cx_rows_merge_heads_bf16(block_data + 3 * part + b * per_text, packing.lengths[b],
                                     heads, head_dim, longest,
                                     context_data + packing.offsets[(size_t)b] * width);
    });
}

/* The same on a GPU: one batched product over the heads of each text. */
void attend_device(const at::Tensor &qkv, at::Tensor &context, const Packing &packing,
                   int64_t heads, int64_t width)
{
    const int64_t head_dim = width / heads;
    for (int64_t b = 0; b < packing.batch; ++b) {
        const int64_t length = packing.lengths[b], first = packing.offsets[(size_t)b];
        at::Tensor rows = qkv.narrow(0, first, length).view({length, 3, heads, head_dim});
        at::Tensor query = rows.select(1, 0).transpose(0, 1); /* [heads, len, d] */
        at::Tensor key = rows.select(1, 1).transpose(0, 1);
        at::Tensor value = rows.select(1, 2).transpose(0, 1);
        at::Tensor weights = at::softmax(at::bmm(query, key.transpose(1, 2)), -1);
        context.narrow(0, first, length)
            .view({length, heads, head_dim})
            .copy_(at::bmm(weights, value).transpose(0, 1));
    }
}

void attend(cx_bert &bert, const at::Tensor &qkv, at::Tensor &context, const Packing &packing)
{
    const int64_t heads = bert.config.num_heads, width = bert.config.hidden_size;
    if (!bert.device.is_cpu())
        attend_device(qkv, context, packing, heads, width);
    else if (qkv.scalar_type() == at::kBFloat16)
        attend_cpu_low(bert.scratch, qkv, context, packing, heads, width);
    else
        attend_cpu(bert.scratch, qkv, context, packing, heads, width);
}

/* One encoder layer over hidden [T, H] in place, fp32 throughout. */
void encoder_layer(cx_bert &bert, const Layer &layer, const Packing &packing)
{
    const cx_bert_config &cfg = bert.config;
    Scratch &s = bert.scratch;
    const at::Device device = bert.device;
    const int64_t tokens = packing.tokens, width = cfg.hidden_size, inner = cfg.intermediate_size;

    at::Tensor hidden = take(s.hidden, tokens * width, {tokens, width}, at::kFloat, device);
    at::Tensor qkv = take(s.qkv, tokens * 3 * width, {tokens, 3 * width}, at::kFloat, device);
    dense(qkv, hidden, layer.qkv_weight, layer.qkv_bias);

    at::Tensor context = take(s.context, tokens * width, {tokens, width}, at::kFloat, device);
    attend(bert, qkv, context, packing);

    at::Tensor projected = take(s.projected, tokens * width, {tokens, width}, at::kFloat, device);
    dense(projected, context, layer.attention_output_weight, layer.attention_output_bias);
    add_layer_norm(hidden, projected, layer.attention_norm_weight, layer.attention_norm_bias,
                   cfg.layer_norm_eps);

    at::Tensor intermediate =
        take(s.intermediate, tokens * inner, {tokens, inner}, at::kFloat, device);
    dense(intermediate, hidden, layer.intermediate_weight, layer.intermediate_bias);
    at::gelu_(intermediate); /* erf form, as BERT's "gelu" */
    dense(projected, intermediate, layer.output_weight, layer.output_bias);
    add_layer_norm(hidden, projected, layer.output_norm_weight, layer.output_norm_bias,
                   cfg.layer_norm_eps);
}

/* bf16 products run over the tokens rounded up (cx_footprint_product_rows: one oneDNN kernel
 * per shape, a few dozen shapes in all). The extra rows hold whatever the scratch held; their
 * outputs are never read (every product is row-wise). */
int64_t product_rows(const Packing &packing)
{
    return cx_footprint_product_rows(packing.tokens);
}

/* intermediate = GELU(hidden W^T + b) over the first `tokens` rows. On CPU the product runs
 * without its bias and one kernel adds it and applies GELU (cx_rows.c): ATen's GELU pass and the
 * bias pass of addmm cost about 10% of bf16 time. */
void bias_gelu(at::Tensor &intermediate, const at::Tensor &hidden, const Layer &layer,
               int64_t tokens)
{
    if (!intermediate.is_cpu()) {
        dense(intermediate, hidden, layer.intermediate_weight, layer.intermediate_bias);
        at::Tensor activated = intermediate.narrow(0, 0, tokens);
        at::gelu_(activated); /* fp32 inside, per element */
        return;
    }
    at::mm_out(intermediate, hidden, layer.intermediate_weight.t());
    const int64_t width = intermediate.size(1);
    cx_bf16 *rows = reinterpret_cast<cx_bf16 *>(intermediate.data_ptr());
    const float *bias = layer.gelu_bias.data_ptr<float>();
    at::parallel_for(0, tokens, 16, [&](int64_t begin, int64_t end) {
        cx_rows_bias_gelu_bf16(rows + begin * width, bias, end - begin, width);
    });
}

/* The same in bf16: every product (dense and attention) reads and writes bf16, accumulating in
 * fp32 inside oneDNN; softmax, GELU and residual + LayerNorm compute in fp32. The residual stream
 * stays fp32 (hidden) and each LayerNorm also writes it rounded to bf16 (hidden_low) for the
 * next product, so no separate conversion pass runs. */
void encoder_layer_bf16(cx_bert &bert, const Layer &layer, const Packing &packing)
{
    const cx_bert_config &cfg = bert.config;
    Scratch &s = bert.scratch;
    const at::Device device = bert.device;
    const int64_t tokens = packing.tokens, width = cfg.hidden_size, inner = cfg.intermediate_size;
    const int64_t rows = product_rows(packing);
    const at::ScalarType low = at::kBFloat16;

    at::Tensor hidden = take(s.hidden, tokens * width, {tokens, width}, at::kFloat, device);
    at::Tensor hidden_low = take(s.hidden_low, rows * width, {rows, width}, low, device);
    at::Tensor qkv_low = take(s.qkv_low, rows * 3 * width, {rows, 3 * width}, low, device);
    dense(qkv_low, hidden_low, layer.qkv_weight, layer.qkv_bias);

    at::Tensor context_low = take(s.context_low, rows * width, {rows, width}, low, device);
    attend(bert, qkv_low, context_low, packing);

    at::Tensor projected_low = take(s.projected_low, rows * width, {rows, width}, low, device);
    dense(projected_low, context_low, layer.attention_output_weight,
          layer.attention_output_bias);
    add_layer_norm(hidden, projected_low, layer.attention_norm_weight,
                   layer.attention_norm_bias, cfg.layer_norm_eps, &hidden_low);

    at::Tensor intermediate_low =
        take(s.intermediate_low, rows * inner, {rows, inner}, low, device);
    bias_gelu(intermediate_low, hidden_low, layer, tokens);
    dense(projected_low, intermediate_low, layer.output_weight, layer.output_bias);
    add_layer_norm(hidden, projected_low, layer.output_norm_weight, layer.output_norm_bias,
                   cfg.layer_norm_eps, &hidden_low);
}

Layer make_layer(const cx_bert_config &cfg, const cx_bert_layer_weights &w, at::Device device,
                 at::ScalarType dense_type)
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
    layer.gelu_bias = layer.intermediate_bias.to(at::kFloat);
    if (dense_type != at::kFloat) {
        /* Converted copies: the products read weight and bias in their own type. */
        for (at::Tensor *tensor :
             {&layer.qkv_weight, &layer.qkv_bias, &layer.attention_output_weight,
              &layer.attention_output_bias, &layer.intermediate_weight, &layer.intermediate_bias,
              &layer.output_weight, &layer.output_bias})
            *tensor = tensor->to(dense_type);
    }
    return layer;
}

int64_t held_bytes(const at::Tensor &tensor)
{
    return tensor.defined() ? (int64_t)tensor.nbytes() : 0;
}

}  // namespace

extern "C" {

cx_bert *cx_bert_new(const cx_bert_config *config, const cx_bert_weights *weights,
                     cx_device device, cx_precision precision, cx_error *err)
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
    cx_status status = cx::guarded(err, "cannot create the encoder", [&]() {
        c10::InferenceMode inference;
        const cx_bert_config &cfg = *config;
        const int64_t h = cfg.hidden_size;
        bert->config = cfg;
        bert->device = device == CX_DEVICE_CUDA ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
        bert->dense_type = precision == CX_PRECISION_BF16 ? at::kBFloat16 : at::kFloat;
        bert->word_embeddings = wrap(weights->word_embeddings, {cfg.vocab_size, h}, bert->device);
        bert->position_embeddings =
            wrap(weights->position_embeddings, {cfg.max_position_embeddings, h}, bert->device);
        bert->token_type_embeddings =
            wrap(weights->token_type_embeddings, {cfg.type_vocab_size, h}, bert->device);
        bert->embedding_norm_weight = wrap(weights->embedding_norm_weight, {h}, bert->device);
        bert->embedding_norm_bias = wrap(weights->embedding_norm_bias, {h}, bert->device);
        bert->layers.reserve((size_t)cfg.num_layers);
        for (int64_t i = 0; i < cfg.num_layers; ++i)
            bert->layers.push_back(
                make_layer(cfg, weights->layers[i], bert->device, bert->dense_type));
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
                          int64_t batch, float *out, cx_error *err)
{
    const cx_bert_config &cfg = bert->config;
    if (batch < 1)
        return cx_error_set(err, CX_ERR_ARGUMENT, "cannot encode an empty batch");
    Packing packing;
    packing.lengths = lengths;
    packing.batch = batch;
    packing.offsets.resize((size_t)batch);
    for (int64_t b = 0; b < batch; ++b) {
        if (lengths[b] < 1 || lengths[b] > cfg.max_position_embeddings)
            return cx_error_set(err, CX_ERR_ARGUMENT,
                                "cannot encode text %lld of %d tokens: the model takes 1 to %lld",
                                (long long)b, lengths[b], (long long)cfg.max_position_embeddings);
        packing.offsets[(size_t)b] = packing.tokens;
        packing.tokens += lengths[b];
        packing.longest = std::max<int64_t>(packing.longest, lengths[b]);
    }
    for (int64_t t = 0; t < packing.tokens; ++t)
        if (ids[t] < 0 || ids[t] >= cfg.vocab_size)
            return cx_error_set(err, CX_ERR_ARGUMENT,
                                "cannot encode: token id %d is outside the vocabulary of %lld",
                                ids[t], (long long)cfg.vocab_size);

    return cx::guarded(err, "forward pass failed", [&]() {
        c10::InferenceMode inference;
        Scratch &s = bert->scratch;
        const int64_t tokens = packing.tokens, width = cfg.hidden_size;
        const at::Device cpu(at::kCPU);

        at::Tensor host_ids = take(s.ids, tokens, {tokens}, at::kLong, cpu);
        at::Tensor host_positions = take(s.positions, tokens, {tokens}, at::kLong, cpu);
        int64_t *id = host_ids.data_ptr<int64_t>(), *position = host_positions.data_ptr<int64_t>();
        for (int64_t b = 0, t = 0; b < batch; ++b)
            for (int64_t l = 0; l < lengths[b]; ++l, ++t) {
                id[t] = ids[t];
                position[t] = l;
            }
        const bool on_cpu = bert->device.is_cpu();
        at::Tensor device_ids = on_cpu ? host_ids : host_ids.to(bert->device);
        at::Tensor device_positions = on_cpu ? host_positions : host_positions.to(bert->device);

        at::Tensor hidden = take(s.hidden, tokens * width, {tokens, width}, at::kFloat,
                                 bert->device);
        const bool low = bert->dense_type == at::kBFloat16;
        at::Tensor hidden_low;
        if (low) /* as many rows as the layers' products take, so that take() keeps it */
            hidden_low = take(s.hidden_low, product_rows(packing) * width,
                              {product_rows(packing), width}, at::kBFloat16, bert->device);
        embed(*bert, hidden, device_ids, device_positions, low ? &hidden_low : nullptr);
        for (const Layer &layer : bert->layers) {
            if (low)
                encoder_layer_bf16(*bert, layer, packing);
            else
                encoder_layer(*bert, layer, packing);
        }
        pool(hidden, packing, out);
        return CX_OK;
    });
}

void cx_bert_release_scratch(cx_bert *bert)
{
    if (bert != nullptr)
        bert->scratch = Scratch();
}

int64_t cx_bert_scratch_held(const cx_bert *bert)
{
    const Scratch &s = bert->scratch;
    return held_bytes(s.hidden) + held_bytes(s.qkv) + held_bytes(s.scores) +
           held_bytes(s.context) + held_bytes(s.projected) + held_bytes(s.intermediate) +
           held_bytes(s.ids) + held_bytes(s.positions) + held_bytes(s.hidden_low) +
           held_bytes(s.qkv_low) + held_bytes(s.heads_low) + held_bytes(s.scores_low) +
           held_bytes(s.context_low) +
           held_bytes(s.projected_low) + held_bytes(s.intermediate_low);
}

cx_device cx_bert_device(const cx_bert *bert)
{
    return bert->device.is_cuda() ? CX_DEVICE_CUDA : CX_DEVICE_CPU;
}

cx_precision cx_bert_precision(const cx_bert *bert)
{
    return bert->dense_type == at::kBFloat16 ? CX_PRECISION_BF16 : CX_PRECISION_FP32;
}

const cx_bert_config *cx_bert_config_of(const cx_bert *bert)
{
    return &bert->config;
}

}  // extern "C"
