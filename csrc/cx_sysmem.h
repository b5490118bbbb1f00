/* cx_sysmem.h: what the system says about memory: this process's RSS and peak RSS
 * (/proc/self/status), the machine's MemAvailable and MemTotal (/proc/meminfo), and the memory
 * cgroup's limit and usage (v2 memory.max / memory.current, v1 memory.limit_in_bytes /
 * memory.usage_in_bytes).
 *
 * Readings allocate nothing: files are read with open/read into stack buffers and parsed in
 * place, so they are safe on the memory manager's pressure path (tens of microseconds). */
#ifndef COARCH_CX_SYSMEM_H
#define COARCH_CX_SYSMEM_H

#include <stdint.h>

#include "cx_error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CX_SYSMEM_PATH_SIZE 1280

/* VmRSS and VmHWM of this process in bytes; each -1 when unreadable. */
void cx_sysmem_read_process(int64_t *rss, int64_t *peak);

/* MemAvailable and MemTotal of the machine in bytes; each -1 when unreadable. */
void cx_sysmem_read_system(int64_t *available, int64_t *total);

/* What the cgroup says about this process. */
typedef struct cx_cgroup_info {
    int version;            /* 0: no memory cgroup found, 1 or 2 */
    int64_t limit_bytes;    /* smallest memory.max / memory.limit_in_bytes from the process's
                               cgroup up to the hierarchy's root; 0 for none ("max") */
    int64_t usage_bytes;    /* memory.current / memory.usage_in_bytes of the process's cgroup
                               minus its inactive file cache, when read; -1 when unreadable */
    char directory[1024];   /* the process's cgroup directory (under root) or "" */
    char usage_path[CX_SYSMEM_PATH_SIZE]; /* its memory.current / memory.usage_in_bytes or "" */
    char stat_path[CX_SYSMEM_PATH_SIZE];  /* its memory.stat or "" */
} cx_cgroup_info;

/* Parses root/proc/self/cgroup and the files under root/sys/fs/cgroup (v1: memory/<path>; v2:
 * <path> or unified/<path>) and reads the usage once. `root` NULL or "/" reads this system.
 * Finding no cgroup is not an error (version 0). Fails when a limit file holds something other
 * than a number or "max" (CX_ERR_IO: an unusable system file); CX_ERR_ARGUMENT when a path is
 * too long. */
cx_status cx_sysmem_read_cgroup(const char *root, cx_cgroup_info *out, cx_error *err);

/* The cgroup's usage now, minus its inactive file cache (the kernel reclaims that cache before
 * it kills anyone; docker stats subtracts it the same way); -1 without a cgroup or when
 * unreadable. */
int64_t cx_sysmem_cgroup_usage(const cx_cgroup_info *cgroup);

#ifdef __cplusplus
}
#endif

#endif
