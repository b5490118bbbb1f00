/* cx_rows.c: row kernels of the forward pass (cx_rows.h).
 *
 * Written so that GCC vectorises every inner loop: no calls inside them, reductions marked with
 * `omp simd` (-fopenmp-simd: the pragma only, no OpenMP runtime), and bf16 handled as integer
 * shifts. */
#include "cx_rows.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
/* Kernels written for AVX-512 with its bf16 instructions (Cooper Lake, Sapphire Rapids and
 * later: the CPUs where bf16 is native), chosen at run time over the generic ones. */
#define CX_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")))
#endif

/* x86-64-v4 is AVX-512 (F, BW, VL, DQ, CD), v3 is AVX2 + FMA; the loader picks the best clone
 * the CPU runs by its feature bits. ("arch=skylake-avx512" clones are picked by CPU model, so a
 * newer or virtual CPU fell back to the plain one, 4x slower.) */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__)
#define CX_VECTOR_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CX_VECTOR_CLONES
#endif

/* Helpers of the kernels are forced inline: a helper left out of line would be compiled for
 * plain x86-64 only, outside the caller's clone (measured: a kernel ran 10x slower). */
#define CX_LANE static inline __attribute__((always_inline))

/* Type punning through a union (defined in C11); memcpy here kept GCC from vectorising. */
typedef union {
    float value;
    uint32_t bits;
} float_bits;

CX_LANE float bits_to_float(uint32_t bits)
{
    return (float_bits){.bits = bits}.value;
}

CX_LANE uint32_t float_to_bits(float value)
{
    return (float_bits){.value = value}.bits;
}

/* fmaxf without its NaN rules, which made GCC call it per element instead of vectorising. */
CX_LANE float larger(float a, float b)
{
    return a > b ? a : b;
}

CX_LANE cx_bf16 round_to_bf16(float value)
{
    /* Round to nearest even by adding half a unit of the kept part (plus the kept part's lowest
     * bit) before truncating. Activations are finite; NaN stays NaN, inf stays inf. */
    const uint32_t bits = float_to_bits(value);
    return (cx_bf16)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

CX_LANE float widen_bf16(cx_bf16 value)
{
    return bits_to_float((uint32_t)value << 16);
}

/* e^x for x <= 0 (softmax subtracts the row's maximum first), relative error under 2e-7:
 * x = n ln2 + r with |r| <= ln2 / 2, e^r by Cephes' expf polynomial, 2^n by the exponent bits.
 * Below -87.3 the result would be subnormal; it is clamped there (about 1e-38, nothing next to
 * the row's largest term, which is 1). */
CX_LANE float exp_nonpositive(float x)
{
    const float log2e = 1.44269504088896341f, ln2_high = 0.693359375f, ln2_low = -2.12194440e-4f;
    x = larger(x, -87.3f);
    /* n = x log2(e) rounded to nearest: adding and removing 1.5 * 2^23 drops the fraction in
     * the FPU's own rounding. floorf would do, but GCC does not vectorise it (trapping math). */
    const float n = (x * log2e + 12582912.0f) - 12582912.0f;
    const float r = x - n * ln2_high - n * ln2_low;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * bits_to_float((uint32_t)((int32_t)n + 127) << 23);
}

cx_bf16 cx_bf16_from_float(float value)
{
    return round_to_bf16(value);
}

float cx_bf16_to_float(cx_bf16 value)
{
    return widen_bf16(value);
}

CX_VECTOR_CLONES
void cx_rows_add_layer_norm(float *rows, const float *add, const cx_bf16 *add_low,
                            const float *gamma, const float *beta, float eps, int64_t count,
                            int64_t width, cx_bf16 *out_low)
{
    for (int64_t r = 0; r < count; ++r) {
        float *row = rows + r * width;
        if (add != NULL) {
            const float *other = add + r * width;
            for (int64_t i = 0; i < width; ++i)
                row[i] += other[i];
        } else if (add_low != NULL) {
            const cx_bf16 *other = add_low + r * width;
            for (int64_t i = 0; i < width; ++i)
                row[i] += widen_bf16(other[i]);
        }
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < width; ++i)
            sum += row[i];
        const float mean = sum / (float)width;
        float squares = 0.0f;
#pragma omp simd reduction(+ : squares)
        for (int64_t i = 0; i < width; ++i)
            squares += (row[i] - mean) * (row[i] - mean);
        const float inverse = 1.0f / sqrtf(squares / (float)width + eps);
        for (int64_t i = 0; i < width; ++i)
            row[i] = (row[i] - mean) * inverse * gamma[i] + beta[i];
        if (out_low != NULL) {
            cx_bf16 *low = out_low + r * width;
            for (int64_t i = 0; i < width; ++i)
                low[i] = round_to_bf16(row[i]);
        }
    }
}

/* Softmax in 16-float vectors (GCC vector extensions, so that the AVX-512 clone uses 512-bit
 * registers: left to the auto-vectoriser it chose 256-bit ones, and this loop is the largest
 * cost of bf16 attention). The same arithmetic as exp_nonpositive and round_to_bf16, lane-wise;
 * C has no vector ?:, so selections are masks. Tails shorter than 16 take the scalar helpers. */
typedef float lanes __attribute__((vector_size(64)));
typedef float lanes_unaligned __attribute__((vector_size(64), aligned(4)));
typedef int32_t int_lanes __attribute__((vector_size(64)));
typedef uint32_t bit_lanes __attribute__((vector_size(64)));
typedef cx_bf16 bf16_lanes __attribute__((vector_size(32)));
typedef cx_bf16 bf16_lanes_unaligned __attribute__((vector_size(32), aligned(2)));
enum { LANES = 16 };

#define BROADCAST(value) ((lanes){0} + (value))
#define SELECT(mask, yes, no) ((lanes)(((int_lanes)(yes) & (mask)) | ((int_lanes)(no) & ~(mask))))
#define WIDEN(from) \
    ((lanes)(__builtin_convertvector(*(const bf16_lanes_unaligned *)(from), bit_lanes) << 16))
#define NARROW(to, value)                                                                  \
    do {                                                                                   \
        const bit_lanes bits_ = (bit_lanes)(value);                                        \
        *(bf16_lanes_unaligned *)(to) = __builtin_convertvector(                           \
            (bits_ + 0x7FFFu + ((bits_ >> 16) & 1u)) >> 16, bf16_lanes);                   \
    } while (0)
#define EXP_NONPOSITIVE(result, input)                                                     \
    do {                                                                                   \
        lanes x_ = (input);                                                                \
        const lanes floor_ = BROADCAST(-87.3f);                                            \
        x_ = SELECT(x_ < floor_, floor_, x_);                                              \
        const lanes n_ = (x_ * 1.44269504088896341f + 12582912.0f) - 12582912.0f;          \
        const lanes r_ = x_ - n_ * 0.693359375f - n_ * -2.12194440e-4f;                     \
        lanes p_ = BROADCAST(1.9875691500e-4f);                                            \
        p_ = p_ * r_ + 1.3981999507e-3f;                                                   \
        p_ = p_ * r_ + 8.3334519073e-3f;                                                   \
        p_ = p_ * r_ + 4.1665795894e-2f;                                                   \
        p_ = p_ * r_ + 1.6666665459e-1f;                                                   \
        p_ = p_ * r_ + 5.0000001201e-1f;                                                   \
        p_ = p_ * r_ * r_ + r_ + 1.0f;                                                     \
        (result) = p_ * (lanes)((__builtin_convertvector(n_, int_lanes) + 127) << 23);     \
    } while (0)

/* Horizontal largest and sum of a vector in four halving steps (a scalar loop over the lanes
 * was a chain of 16 dependent operations, as long as the row's own work). */
#define HALVES(v, op)                                                                      \
    do {                                                                                   \
        v = op(v, __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3,  \
                                          4, 5, 6, 7));                                    \
        v = op(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, \
                                          9, 10, 11));                                     \
        v = op(v, __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14,  \
                                          15, 12, 13));                                    \
        v = op(v, __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13,  \
                                          12, 15, 14));                                    \
    } while (0)
#define LARGER(a, b) SELECT((a) > (b), a, b)
#define PLUS(a, b) ((a) + (b))

/* The portable bf16 softmax: CPUs without AVX-512-BF16 (which run bf16 only when asked to). */
CX_VECTOR_CLONES
void cx_rows_softmax_bf16_generic(cx_bf16 *rows, int64_t count, int64_t width, int64_t stride,
                                  float *work)
{
    /* The last partial vector of a row is read whole when the stride leaves room for it (the
     * lanes past `width` are masked off): a scalar tail cost as much as the vectors before it
     * for rows of about 170 values. */
    const int64_t padded = (width + LANES - 1) / LANES * LANES;
    const int64_t whole = padded <= stride ? padded : width / LANES * LANES;
    const int_lanes lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const lanes none = BROADCAST(-INFINITY);
    for (int64_t r = 0; r < count; ++r) {
        cx_bf16 *row = rows + r * stride;
        lanes most = none;
        for (int64_t i = 0; i < whole; i += LANES) {
            const int_lanes valid = lane + (int32_t)i < (int32_t)width;
            most = LARGER(SELECT(valid, WIDEN(row + i), none), most);
        }
        HALVES(most, LARGER);
        float largest = most[0];
        for (int64_t i = whole; i < width; ++i)
            largest = larger(largest, widen_bf16(row[i]));

        lanes sums = {0};
        for (int64_t i = 0; i < whole; i += LANES) {
            const int_lanes valid = lane + (int32_t)i < (int32_t)width;
            lanes e;
            EXP_NONPOSITIVE(e, SELECT(valid, WIDEN(row + i), none) - largest);
            e = SELECT(valid, e, BROADCAST(0.0f));
            *(lanes_unaligned *)(work + i) = e;
            sums += e;
        }
        HALVES(sums, PLUS);
        float sum = sums[0];
        for (int64_t i = whole; i < width; ++i) {
            work[i] = exp_nonpositive(widen_bf16(row[i]) - largest);
            sum += work[i];
        }

        const float inverse = 1.0f / sum;
        for (int64_t i = 0; i < whole; i += LANES)
            NARROW(row + i, *(const lanes_unaligned *)(work + i) * inverse);
        for (int64_t i = whole; i < width; ++i)
            row[i] = round_to_bf16(work[i] * inverse);
        for (int64_t i = whole > width ? whole : width; i < stride; ++i)
            row[i] = 0;
    }
}

#ifdef CX_AVX512_BF16
/* The same with AVX-512 and its bf16 conversion, on the CPUs that run bf16 natively: the largest
 * cost of bf16 attention. The CPUs measured here have one 512-bit FMA port, so the kernel is
 * bound by its count of arithmetic instructions, and every step is the shortest one: 2^x
 * instead of e^x (the input is scaled once), a degree-4 polynomial (relative error 7.6e-6,
 * far below bf16's 2^-9), vscalefps for 2^n (it also flushes what underflows), one rounding
 * instruction to bf16, and masked loads for the last partial vector instead of a scalar tail.
 * Measured 1.6-1.9x the generic clone's speed (rows of 64 to 256 values). */
CX_AVX512_BF16 CX_LANE __m512 widen_bf16x16(const cx_bf16 *from, __mmask16 keep)
{
    const __m256i half = _mm256_maskz_loadu_epi16(keep, from);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
}

CX_AVX512_BF16 CX_LANE __m512 exp2_nonpositive(__m512 x)
{
    const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(x, n); /* in [-0.5, 0.5] */
    __m512 p = _mm512_set1_ps(0.00927828904f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.0558650233f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.240308955f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.693129539f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.999997854f));
    return _mm512_scalef_ps(p, n);
}

CX_AVX512_BF16 static void softmax_bf16_avx512(cx_bf16 *rows, int64_t count, int64_t width,
                                               int64_t stride, float *work)
{
    const float log2e = 1.44269504088896341f;
    const int64_t whole = width / LANES * LANES;
    const __mmask16 last = (__mmask16)((1u << (width - whole)) - 1u); /* 0 when none */
    for (int64_t r = 0; r < count; ++r) {
        cx_bf16 *row = rows + r * stride;
        __m512 most = _mm512_set1_ps(-INFINITY);
        for (int64_t i = 0; i < whole; i += LANES)
            most = _mm512_max_ps(most, widen_bf16x16(row + i, 0xFFFF));
        most = _mm512_mask_max_ps(most, last, most, widen_bf16x16(row + whole, last));
        /* e^(x - max) = 2^(x log2e - max log2e): one FMA per vector. */
        const __m512 shift = _mm512_set1_ps(-_mm512_reduce_max_ps(most) * log2e);
        const __m512 scale = _mm512_set1_ps(log2e);

        __m512 sums = _mm512_setzero_ps();
        for (int64_t i = 0; i < whole; i += LANES) {
            const __m512 e =
                exp2_nonpositive(_mm512_fmadd_ps(widen_bf16x16(row + i, 0xFFFF), scale, shift));
            _mm512_storeu_ps(work + i, e);
            sums = _mm512_add_ps(sums, e);
        }
        if (last != 0) {
            const __m512 x = _mm512_fmadd_ps(widen_bf16x16(row + whole, last), scale, shift);
            const __m512 e = _mm512_maskz_mov_ps(last, exp2_nonpositive(x));
            _mm512_storeu_ps(work + whole, e);
            sums = _mm512_add_ps(sums, e);
        }

        const __m512 inverse = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sums));
        const int64_t written = (width + LANES - 1) / LANES * LANES;
        for (int64_t i = 0; i < written; i += LANES) {
            const __m512 p = _mm512_mul_ps(_mm512_loadu_ps(work + i), inverse);
            const __m256bh low = _mm512_cvtneps_pbh(p);
            const __mmask16 keep = i + LANES <= width ? 0xFFFF : last;
            _mm256_mask_storeu_epi16(row + i, keep, (__m256i)low);
        }
        for (int64_t i = width; i < stride; ++i)
            row[i] = 0;
    }
}
#endif

#ifdef CX_AVX512_BF16
/* GELU with its bias, on the CPUs that run bf16 natively: ATen's GELU pass plus the bias pass of
 * the product before it cost about 10% of bf16 time. Phi(x) = 0.5 + x P(x^2) on x clamped to
 * [-4, 4], P of degree 8 fitted to the normal CDF: |error| under 3e-5 in Phi (Phi(4) is 1 - 3e-5),
 * under 3e-4 in GELU at any x, far below bf16's rounding of the result. */
CX_AVX512_BF16 static void bias_gelu_bf16_avx512(cx_bf16 *rows, const float *bias, int64_t count,
                                                 int64_t width)
{
    static const float cdf[] = {0.398935825f,     -0.0664451569f,  0.00990396738f,
                                -0.00114287308f,  0.000100483652f, -6.45047749e-06f,
                                2.80285434e-07f,  -7.25844052e-09f, 8.37036482e-11f};
    const int64_t terms = (int64_t)(sizeof cdf / sizeof cdf[0]);
    const __m512 low = _mm512_set1_ps(-4.0f), high = _mm512_set1_ps(4.0f);
    for (int64_t r = 0; r < count; ++r) {
        cx_bf16 *row = rows + r * width;
        for (int64_t i = 0; i < width; i += LANES) {
            const __mmask16 keep = i + LANES <= width ? 0xFFFF
                                                      : (__mmask16)((1u << (width - i)) - 1u);
            const __m512 x =
                _mm512_add_ps(widen_bf16x16(row + i, keep), _mm512_maskz_loadu_ps(keep, bias + i));
            const __m512 t = _mm512_min_ps(_mm512_max_ps(x, low), high);
            const __m512 square = _mm512_mul_ps(t, t);
            __m512 p = _mm512_set1_ps(cdf[terms - 1]);
            for (int64_t k = terms - 2; k >= 0; --k)
                p = _mm512_fmadd_ps(p, square, _mm512_set1_ps(cdf[k]));
            const __m512 phi = _mm512_fmadd_ps(t, p, _mm512_set1_ps(0.5f));
            const __m256bh out = _mm512_cvtneps_pbh(_mm512_mul_ps(x, phi));
            _mm256_mask_storeu_epi16(row + i, keep, (__m256i)out);
        }
    }
}
#endif

/* The portable version: erff per value. */
void cx_rows_bias_gelu_bf16_generic(cx_bf16 *rows, const float *bias, int64_t count,
                                    int64_t width)
{
    for (int64_t r = 0; r < count; ++r) {
        cx_bf16 *row = rows + r * width;
        for (int64_t i = 0; i < width; ++i) {
            const float x = widen_bf16(row[i]) + bias[i];
            row[i] = round_to_bf16(0.5f * x * (1.0f + erff(x * 0.70710678118654752f)));
        }
    }
}

/* True where the AVX-512-BF16 kernels run. */
static int avx512_bf16(void)
{
#ifdef CX_AVX512_BF16
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

void cx_rows_bias_gelu_bf16(cx_bf16 *rows, const float *bias, int64_t count, int64_t width)
{
#ifdef CX_AVX512_BF16
    if (avx512_bf16()) {
        bias_gelu_bf16_avx512(rows, bias, count, width);
        return;
    }
#endif
    cx_rows_bias_gelu_bf16_generic(rows, bias, count, width);
}

void cx_rows_softmax_bf16(cx_bf16 *rows, int64_t count, int64_t width, int64_t stride,
                          float *work)
{
#ifdef CX_AVX512_BF16
    if (avx512_bf16()) {
        softmax_bf16_avx512(rows, count, width, stride, work);
        return;
    }
#endif
    cx_rows_softmax_bf16_generic(rows, count, width, stride, work);
}

CX_VECTOR_CLONES
void cx_rows_softmax(float *rows, int64_t count, int64_t width)
{
    for (int64_t r = 0; r < count; ++r) {
        float *row = rows + r * width;
        float largest = -INFINITY;
#pragma omp simd reduction(max : largest)
        for (int64_t i = 0; i < width; ++i)
            largest = larger(largest, row[i]);
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < width; ++i) {
            row[i] = exp_nonpositive(row[i] - largest);
            sum += row[i];
        }
        const float inverse = 1.0f / sum;
        for (int64_t i = 0; i < width; ++i)
            row[i] *= inverse;
    }
}

void cx_rows_split_heads_bf16(const cx_bf16 *rows, int64_t length, int64_t parts, int64_t heads,
                              int64_t head_dim, cx_bf16 *blocks, int64_t part_stride,
                              int64_t block_rows)
{
    const size_t piece = sizeof(cx_bf16) * (size_t)head_dim;
    for (int64_t l = 0; l < length; ++l)
        for (int64_t p = 0; p < parts; ++p) {
            const cx_bf16 *from = rows + (l * parts + p) * heads * head_dim;
            cx_bf16 *to = blocks + p * part_stride + l * head_dim;
            for (int64_t h = 0; h < heads; ++h)
                memcpy(to + h * block_rows * head_dim, from + h * head_dim, piece);
        }
    cx_bf16 *last = blocks + (parts - 1) * part_stride;
    for (int64_t h = 0; h < heads && length < block_rows; ++h)
        memset(last + (h * block_rows + length) * head_dim, 0,
               piece * (size_t)(block_rows - length));
}

void cx_rows_merge_heads_bf16(const cx_bf16 *blocks, int64_t length, int64_t heads,
                              int64_t head_dim, int64_t block_rows, cx_bf16 *rows)
{
    const size_t piece = sizeof(cx_bf16) * (size_t)head_dim;
    for (int64_t l = 0; l < length; ++l)
        for (int64_t h = 0; h < heads; ++h)
            memcpy(rows + (l * heads + h) * head_dim, blocks + (h * block_rows + l) * head_dim,
                   piece);
}
