/* test_rows.c: plain C tests of cx_rows (no Python, no libtorch): bf16 rounding, residual +
 * LayerNorm, softmax (fp32 and bf16, with padding) and GELU against double-precision references
 * computed here with libm, and attention's head layout. Exits 0 when every check passes;
 * `make -C tests/c check`. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cx_rows.h"

#include "check.h"

/* Deterministic values in [-scale, scale]. */
static float value_at(int64_t i, float scale)
{
    return scale * sinf((float)i * 0.7071f + 0.3f);
}

static void test_bf16_rounding(void)
{
    CHECK(cx_bf16_from_float(1.0f) == 0x3F80, "1.0 is 0x3F80");
    CHECK(cx_bf16_to_float(0x3F80) == 1.0f, "0x3F80 is 1.0");
    /* 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even one, 1. */
    CHECK(cx_bf16_from_float(1.0f + 0x1p-8f) == 0x3F80, "tie rounds to even");
    CHECK(cx_bf16_from_float(1.0f + 0x1p-8f + 0x1p-12f) == 0x3F81, "above the tie rounds up");
    CHECK(cx_bf16_from_float(-2.5f) == 0xC020, "-2.5 is exact");
    CHECK(isinf(cx_bf16_to_float(cx_bf16_from_float(INFINITY))), "inf stays inf");
    CHECK(isnan(cx_bf16_to_float(cx_bf16_from_float(NAN))), "NaN stays NaN");
    for (int64_t i = 0; i < 1000; ++i) {
        const float x = value_at(i, 100.0f);
        const float back = cx_bf16_to_float(cx_bf16_from_float(x));
        CHECK(fabsf(back - x) <= fabsf(x) * 0x1p-8f, "%g rounds to %g", x, back);
    }
}

static void test_layer_norm(void)
{
    enum { ROWS = 5, WIDTH = 37 };
    float rows[ROWS * WIDTH], add[ROWS * WIDTH], gamma[WIDTH], beta[WIDTH];
    cx_bf16 add_low[ROWS * WIDTH], out_low[ROWS * WIDTH];
    for (int64_t i = 0; i < ROWS * WIDTH; ++i) {
        rows[i] = value_at(i, 3.0f);
        add[i] = value_at(i + 1000, 2.0f);
        add_low[i] = cx_bf16_from_float(add[i]);
    }
    for (int i = 0; i < WIDTH; ++i) {
        gamma[i] = 1.0f + value_at(i + 50, 0.5f);
        beta[i] = value_at(i + 90, 0.2f);
    }
    float low_rows[ROWS * WIDTH];
    memcpy(low_rows, rows, sizeof rows);
    double expected[ROWS * WIDTH];
    for (int r = 0; r < ROWS; ++r) {
        double sum = 0.0, squares = 0.0, x[WIDTH];
        for (int i = 0; i < WIDTH; ++i)
            sum += x[i] = (double)rows[r * WIDTH + i] + add[r * WIDTH + i];
        const double mean = sum / WIDTH;
        for (int i = 0; i < WIDTH; ++i)
            squares += (x[i] - mean) * (x[i] - mean);
        const double inverse = 1.0 / sqrt(squares / WIDTH + 1e-12);
        for (int i = 0; i < WIDTH; ++i)
            expected[r * WIDTH + i] = (x[i] - mean) * inverse * gamma[i] + beta[i];
    }
    cx_rows_add_layer_norm(rows, add, NULL, gamma, beta, 1e-12f, ROWS, WIDTH, out_low);
    for (int64_t i = 0; i < ROWS * WIDTH; ++i) {
        CHECK(fabs(rows[i] - expected[i]) < 1e-5, "fp32 row value %lld: %g, not %g",
              (long long)i, rows[i], expected[i]);
        CHECK(out_low[i] == cx_bf16_from_float(rows[i]), "bf16 copy of value %lld",
              (long long)i);
    }
    /* A bf16 residual is widened exactly: the same as adding its fp32 value. */
    float widened[ROWS * WIDTH], reference[ROWS * WIDTH];
    for (int64_t i = 0; i < ROWS * WIDTH; ++i)
        widened[i] = cx_bf16_to_float(add_low[i]);
    memcpy(reference, low_rows, sizeof low_rows);
    cx_rows_add_layer_norm(reference, widened, NULL, gamma, beta, 1e-12f, ROWS, WIDTH, NULL);
    cx_rows_add_layer_norm(low_rows, NULL, add_low, gamma, beta, 1e-12f, ROWS, WIDTH, NULL);
    CHECK(memcmp(low_rows, reference, sizeof reference) == 0, "bf16 residual = its fp32 value");
}

/* softmax of row[0..width) in double. */
static void reference_softmax(const float *row, int64_t width, double *out)
{
    double largest = -INFINITY, sum = 0.0;
    for (int64_t i = 0; i < width; ++i)
        largest = fmax(largest, row[i]);
    for (int64_t i = 0; i < width; ++i)
        sum += out[i] = exp((double)row[i] - largest);
    for (int64_t i = 0; i < width; ++i)
        out[i] /= sum;
}

typedef void softmax_bf16_fn(cx_bf16 *, int64_t, int64_t, int64_t, float *);

/* `softmax_bf16` is the dispatched kernel (AVX-512-BF16 where the CPU has it) or the generic one:
 * both are checked against the same references. */
static void test_softmax(softmax_bf16_fn *softmax_bf16)
{
    /* Widths around the 16-lane vectors, and scores far apart (exp underflows to ~0). */
    const int64_t widths[] = {1, 7, 16, 17, 33, 128, 250};
    for (size_t w = 0; w < sizeof widths / sizeof widths[0]; ++w) {
        const int64_t width = widths[w], stride = width + 5, rows = 3;
        float *values = malloc(sizeof(float) * (size_t)(rows * width));
        cx_bf16 *low = malloc(sizeof(cx_bf16) * (size_t)(rows * stride));
        float *work = malloc(sizeof(float) * (size_t)((width + 15) / 16 * 16));
        double *expected = malloc(sizeof(double) * (size_t)width);
        for (int64_t i = 0; i < rows * width; ++i)
            values[i] = value_at(i, i % 3 == 2 ? 60.0f : 6.0f);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t i = 0; i < stride; ++i)
                low[r * stride + i] = cx_bf16_from_float(i < width ? values[r * width + i] : 9.0f);
        float *exact = malloc(sizeof(float) * (size_t)(rows * width));
        for (int64_t i = 0; i < rows * width; ++i)
            exact[i] = cx_bf16_to_float(cx_bf16_from_float(values[i]));
        softmax_bf16(low, rows, width, stride, work);
        memcpy(values, exact, sizeof(float) * (size_t)(rows * width));
        cx_rows_softmax(values, rows, width);
        for (int64_t r = 0; r < rows; ++r) {
            reference_softmax(exact + r * width, width, expected);
            double total = 0.0;
            for (int64_t i = 0; i < width; ++i) {
                const double p = cx_bf16_to_float(low[r * stride + i]);
                total += p;
                CHECK(fabs(p - expected[i]) <= expected[i] * 0x1p-8 + 1e-30,
                      "bf16 width %lld row %lld [%lld]: %g, not %g", (long long)width,
                      (long long)r, (long long)i, p, expected[i]);
                CHECK(fabs(values[r * width + i] - expected[i]) <= expected[i] * 1e-5 + 1e-30,
                      "fp32 width %lld row %lld [%lld]: %g, not %g", (long long)width,
                      (long long)r, (long long)i, values[r * width + i], expected[i]);
            }
            CHECK(fabs(total - 1.0) < 0.01, "bf16 probabilities sum to %g", total);
            for (int64_t i = width; i < stride; ++i)
                CHECK(low[r * stride + i] == 0, "padding [%lld] zeroed", (long long)i);
        }
        free(values);
        free(low);
        free(work);
        free(expected);
        free(exact);
    }
}

typedef void bias_gelu_fn(cx_bf16 *, const float *, int64_t, int64_t);

/* GELU(x + bias) in BERT's erf form against libm in double, for the dispatched kernel and the
 * generic one; widths around the 16-lane vectors, values from -12 to 12 (past the AVX-512
 * kernel's clamp at 4). Allowed: bf16's rounding plus 4e-4 (the polynomial's error). */
static void test_bias_gelu(bias_gelu_fn *bias_gelu)
{
    const int64_t widths[] = {1, 15, 16, 17, 100, 1536};
    for (size_t w = 0; w < sizeof widths / sizeof widths[0]; ++w) {
        const int64_t width = widths[w], rows = 3;
        cx_bf16 *low = malloc(sizeof(cx_bf16) * (size_t)(rows * width + 1));
        float *bias = malloc(sizeof(float) * (size_t)width);
        for (int64_t i = 0; i < width; ++i)
            bias[i] = value_at(i + 7, 0.5f);
        for (int64_t i = 0; i < rows * width; ++i)
            low[i] = cx_bf16_from_float(value_at(i, 12.0f));
        low[rows * width] = 0x7FC0; /* a NaN just past the rows: must stay untouched */
        cx_bf16 *input = malloc(sizeof(cx_bf16) * (size_t)(rows * width));
        memcpy(input, low, sizeof(cx_bf16) * (size_t)(rows * width));
        bias_gelu(low, bias, rows, width);
        for (int64_t i = 0; i < rows * width; ++i) {
            const double x = (double)cx_bf16_to_float(input[i]) + bias[i % width];
            const double expected = 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
            const double got = cx_bf16_to_float(low[i]);
            CHECK(fabs(got - expected) <= fabs(expected) * 0x1p-8 + 4e-4,
                  "GELU width %lld [%lld] of %g: %g, not %g", (long long)width, (long long)i, x,
                  got, expected);
        }
        CHECK(low[rows * width] == 0x7FC0, "GELU width %lld wrote past its rows",
              (long long)width);
        free(low);
        free(bias);
        free(input);
    }
}

/* Split then merge: every value lands where the layout says, the last part's padding rows are
 * zeroed, the other padding rows are left alone, and merging gives the part's rows back. */
static void test_split_merge_heads(void)
{
    enum { LENGTH = 5, PARTS = 3, HEADS = 2, DIM = 4, BLOCK = 8 };
    enum { PART = HEADS * BLOCK * DIM + 3 }; /* parts further apart than a text's block */
    cx_bf16 rows[LENGTH * PARTS * HEADS * DIM], blocks[PARTS * PART], back[LENGTH * HEADS * DIM];
    for (int i = 0; i < LENGTH * PARTS * HEADS * DIM; ++i)
        rows[i] = (cx_bf16)(i + 1);
    for (int i = 0; i < PARTS * PART; ++i)
        blocks[i] = 0xBEEF;
    cx_rows_split_heads_bf16(rows, LENGTH, PARTS, HEADS, DIM, blocks, PART, BLOCK);
    for (int p = 0; p < PARTS; ++p)
        for (int h = 0; h < HEADS; ++h)
            for (int l = 0; l < BLOCK; ++l)
                for (int i = 0; i < DIM; ++i) {
                    const cx_bf16 got = blocks[p * PART + (h * BLOCK + l) * DIM + i];
                    const cx_bf16 want = l < LENGTH ? rows[((l * PARTS + p) * HEADS + h) * DIM + i]
                                         : p == PARTS - 1 ? 0
                                                          : 0xBEEF;
                    CHECK(got == want, "split part %d head %d row %d [%d]: %u, not %u", p, h, l,
                          i, got, want);
                }
    for (int p = 0; p < PARTS; ++p) {
        cx_rows_merge_heads_bf16(blocks + p * PART, LENGTH, HEADS, DIM, BLOCK, back);
        for (int l = 0; l < LENGTH; ++l)
            for (int i = 0; i < HEADS * DIM; ++i)
                CHECK(back[l * HEADS * DIM + i] == rows[(l * PARTS + p) * HEADS * DIM + i],
                      "merge part %d row %d [%d]", p, l, i);
    }
}

int main(void)
{
    test_bf16_rounding();
    test_layer_norm();
    test_softmax(cx_rows_softmax_bf16);
    test_softmax(cx_rows_softmax_bf16_generic);
    test_bias_gelu(cx_rows_bias_gelu_bf16);
    test_bias_gelu(cx_rows_bias_gelu_bf16_generic);
    test_split_merge_heads();
    printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
