/* cx_backend.cpp: libtorch as a backend (threads, version, the bf16-native check, the CUDA
 * device) behind the C API of cx_backend.h. Every export stops exceptions at the C boundary. */
#include "cx_backend.h"
#include "cx_guard.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/version.h>

#include <mutex>
#include <string>

#ifdef COARCH_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace {

/* ---- is bf16 native? ---------------------------------------------------------------------
 * Decided from what the machine has, never from a timing: a timing on a busy machine flipped
 * the answer, and an index keeps the precision it was built with. */

struct Bf16Verdict {
    bool native = false;
    std::string reason; /* says what was found, in /proc/cpuinfo's names */
};

/* The CPU's bf16 instructions as cpuinfo names them ("avx512_bf16", "amx_bf16"), from cpuid. */
std::string cpu_bf16_features()
{
    __builtin_cpu_init();
    std::string found;
    if (__builtin_cpu_supports("avx512bf16"))
        found = "avx512_bf16";
    if (__builtin_cpu_supports("amx-bf16"))
        found += found.empty() ? "amx_bf16" : " and amx_bf16";
    return found;
}

/* libtorch 1.13 sends a bf16 product to oneDNN only when oneDNN is built in and enabled and the
 * CPU has AVX-512 BW, VL and DQ (ATen's mkldnn_bf16_device_check); otherwise it runs a scalar
 * reference loop. Returns nullptr when all hold, else what is missing. */
const char *onednn_bf16_missing()
{
    if (!AT_MKLDNN_ENABLED() || !at::globalContext().hasMKLDNN())
        return "this libtorch has no oneDNN";
    if (!at::globalContext().userEnabledMkldnn())
        return "oneDNN is disabled in this libtorch (torch.backends.mkldnn)";
    if (!__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vl") ||
        !__builtin_cpu_supports("avx512dq"))
        return "the CPU lacks the AVX-512 BW/VL/DQ that libtorch's oneDNN bf16 path needs";
    return nullptr;
}

/* A product of all-MiniLM-L6-v2's feed-forward shape, [64, 384] x [1536, 384]^T, run in bf16
 * as the encoder's dense() runs a bf16 product (at::addmm_out, which oneDNN takes), against
 * fp32 on the same inputs. The inputs are
 * multiples of 1/8 below 1, exact in bf16, so the two differ only by the bf16 rounding of the
 * result. Checks that the product runs and is right; its speed is not measured. Returns
 * nullptr when it is right, else what went wrong. */
const char *bf16_product_wrong()
{
    c10::InferenceMode inference;
    const int64_t rows = 64, inner = 384, outer = 1536;
    at::Tensor input = at::arange(rows * inner, at::kFloat).view({rows, inner});
    at::Tensor weight = at::arange(outer * inner, at::kFloat).view({outer, inner});
    input = (input.remainder(15) - 7) / 8;
    weight = (weight.remainder(13) - 6) / 8;
    at::Tensor bias = (at::arange(outer, at::kFloat).remainder(11) - 5) / 8;
    at::Tensor expected = at::addmm(bias, input, weight.t());
    at::Tensor out = at::empty({rows, outer}, at::kBFloat16);
    at::addmm_out(out, bias.to(at::kBFloat16), input.to(at::kBFloat16),
                  weight.to(at::kBFloat16).t());
    /* bf16 keeps 8 significant bits: each result is within 2^-8 of its own magnitude. */
    const double error = (out.to(at::kFloat) - expected).abs().max().item<double>();
    const double scale = expected.abs().max().item<double>();
    return error <= scale / 128 ? nullptr : "a bf16 product gave wrong results";
}

Bf16Verdict decide_bf16()
{
    Bf16Verdict verdict;
    const std::string features = cpu_bf16_features();
    if (features.empty()) {
        verdict.reason = "fp32: the CPU has no native bf16 instructions (no avx512_bf16 or "
                         "amx_bf16 in cpuid)";
        return verdict;
    }
    const std::string has = "the CPU has " + features;
    if (const char *missing = onednn_bf16_missing()) {
        verdict.reason = "fp32: " + has + ", but " + missing;
        return verdict;
    }
    const char *wrong = nullptr;
    try {
        wrong = bf16_product_wrong();
    } catch (const c10::Error &e) {
        verdict.reason = "fp32: " + has + ", but a bf16 product failed in libtorch: " +
                         e.what_without_backtrace();
        return verdict;
    } catch (...) {
        verdict.reason = "fp32: " + has + ", but a bf16 product failed in libtorch";
        return verdict;
    }
    if (wrong != nullptr) {
        verdict.reason = "fp32: " + has + ", but " + wrong;
        return verdict;
    }
    verdict.native = true;
    verdict.reason = "bf16: " + has + ", libtorch " TORCH_VERSION
                     " runs bf16 products in oneDNN, and a probe product was right";
    return verdict;
}

}  // namespace

extern "C" {

cx_status cx_backend_set_threads(int threads, cx_error *err)
{
    if (threads < 1)
        return cx_error_set(err, CX_ERR_ARGUMENT, "threads must be at least 1, not %d", threads);
    return cx::guarded(err, "cannot set libtorch's thread count", [&]() {
        /* Unchanged: skip set_num_threads, which also drops oneDNN's convolution cache. */
        if (at::get_num_threads() != threads)
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

int cx_backend_bf16_native(const char **reason)
{
    static std::once_flag once;
    static Bf16Verdict verdict;
    std::call_once(once, [] {
        try {
            verdict = decide_bf16();
        } catch (...) {
            verdict = Bf16Verdict();
            verdict.reason = "fp32: the bf16 check failed";
        }
    });
    *reason = verdict.reason.c_str();
    return verdict.native ? 1 : 0;
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
    return cx::guarded(err, "cannot release the CUDA cache", [&]() {
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
    return cx::guarded(err, "cannot read CUDA memory", [&]() {
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
