/* cx_threads.h: how many cores this process may use, and OpenBLAS's thread count.
 *
 * libtorch does its float GEMM in OpenBLAS, whose thread pool is separate from ATen's intra-op
 * pool; both must be set or half the work runs on one core. */
#ifndef COARCH_CX_THREADS_H
#define COARCH_CX_THREADS_H

#ifdef __cplusplus
extern "C" {
#endif

/* Cores in this process's affinity mask (sched_getaffinity), at least 1. */
int cx_threads_available(void);

/* Sets OpenBLAS's thread count through openblas_set_num_threads found with dlsym. Returns 1 when
 * OpenBLAS is loaded and was set, 0 when this process has no OpenBLAS (another BLAS). */
int cx_threads_set_blas(int threads);

/* OpenBLAS's thread count (openblas_get_num_threads) or 0 without OpenBLAS. */
int cx_threads_blas(void);

/* OpenBLAS's core name (openblas_get_corename, e.g. "Haswell", "SkylakeX") or "" */
const char *cx_threads_blas_core(void);

#ifdef __cplusplus
}
#endif

#endif
