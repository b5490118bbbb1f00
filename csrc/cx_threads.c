/* cx_threads.c: core count from the affinity mask, and OpenBLAS's thread pool via dlsym.
 *
 * OpenBLAS is reached through libtorch (libblas.so.3 -> openblas), not linked by us, so its
 * functions are looked up at run time; a libtorch on MKL simply has none of them. */
#include "cx_threads.h"

#include <dlfcn.h>
#include <sched.h>

int cx_threads_available(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return 1;
    int count = CPU_COUNT(&set);
    return count > 0 ? count : 1;
}

int cx_threads_set_blas(int threads)
{
    void (*set_threads)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "openblas_set_num_threads");
    if (set_threads == NULL)
        return 0;
    set_threads(threads);
    return 1;
}

int cx_threads_blas(void)
{
    int (*get_threads)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "openblas_get_num_threads");
    return get_threads != NULL ? get_threads() : 0;
}

const char *cx_threads_blas_core(void)
{
    char *(*get_core)(void) = (char *(*)(void))dlsym(RTLD_DEFAULT, "openblas_get_corename");
    const char *name = get_core != NULL ? get_core() : NULL;
    return name != NULL ? name : "";
}
