/* cx_backend.h: libtorch as a backend: its thread count, version, the bf16-native check and the
 * CUDA device (availability, cache release, memory), implemented in cx_backend.cpp.
 *
 * Plain C over C++: every function catches c10::Error, std::exception and everything else and
 * reports a status or a neutral value; nothing throws across this boundary. Engine files (the
 * memory manager) and bridge files call it without knowing about the encoder. */
#ifndef COARCH_CX_BACKEND_H
#define COARCH_CX_BACKEND_H

#include <stdint.h>

#include "cx_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* libtorch's intra-op thread count (at::set_num_threads / at::get_num_threads) for the calling
 * thread's parallel work. With libtorch's OpenMP backend (the one this build uses) it is the
 * calling thread's OpenMP setting: two threads that encode at once each run with their own
 * count. A thread that has not run parallel work yet starts with the count set last. The
 * bridge sets it at the start of every encode (embedder_type.c). CX_ERR_ARGUMENT below 1,
 * CX_ERR_BACKEND when libtorch raises. */
cx_status cx_backend_set_threads(int threads, cx_error *err);
int cx_backend_threads(void); /* 1 when libtorch raises */

/* The libtorch version built against, e.g. "1.13.0" (static string). */
const char *cx_backend_version(void);

/* Whether bf16 products are native here, decided from the machine and never from a timing (a
 * timing on a busy machine flips it, and an index keeps its precision): the CPU has avx512_bf16
 * or AMX-BF16 (cpuid), this libtorch has oneDNN enabled and the AVX-512 BW/VL/DQ its bf16 path
 * needs, and a probe product in bf16 runs and is right (its speed is not measured). Returns 1
 * or 0 and points *reason at a sentence, valid for the process's life, that says what was
 * found, e.g. "bf16: the CPU has avx512_bf16, libtorch 1.13.0 runs bf16 products in oneDNN,
 * ...". Decided once per process (thread-safe); later calls return the same answer. */
int cx_backend_bf16_native(const char **reason);

/* 1 when this libtorch was built with CUDA and a device is present, else 0. */
int cx_backend_cuda_available(void);
/* Releases the CUDA caching allocator's unused blocks (emptyCache); a no-op without CUDA.
 * CX_ERR_BACKEND with libtorch's message when it raises. */
cx_status cx_backend_cuda_empty_cache(cx_error *err);
/* Bytes the caching allocator holds on device 0 and the device's total; zeros without CUDA.
 * CX_ERR_BACKEND (zeros kept) when libtorch or the CUDA runtime fails. */
cx_status cx_backend_cuda_memory(int64_t *reserved_bytes, int64_t *total_bytes, cx_error *err);

#ifdef __cplusplus
}
#endif

#endif
