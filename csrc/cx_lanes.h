/* cx_lanes.h: inline helpers of the vectorised kernels (cx_rows.c, cx_attention.c): bf16
 * conversions, a vectorisable exp, and the attribute that compiles a kernel for AVX-512, AVX2 and
 * plain x86-64 with the choice made at load time. Private to csrc/; no state. */
#ifndef COARCH_CX_LANES_H
#define COARCH_CX_LANES_H

#include <stdint.h>

typedef uint16_t cx_bf16; /* the upper 16 bits of an IEEE float, as libtorch's at::BFloat16 */

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
 * plain x86-64 only, outside the caller's clone (measured: the attention ran 10x slower). */
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

#endif
