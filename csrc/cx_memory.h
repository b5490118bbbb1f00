/* cx_memory.h: the MemoryManager engine: the limit, pressure, and the token budget of the next
 * batch, so that embedding stays inside a memory limit by construction and by measurement.
 *
 * Readings come from cx_sysmem.h (RSS, MemAvailable, the cgroup's limit and usage) and, with a
 * CUDA model, cx_backend.h (GPU memory). Reading pressure allocates nothing and takes
 * microseconds. The manager never calls Python: actions that
 * need the GIL (garbage collection) are returned as flags for the bridge to run. */
#ifndef COARCH_CX_MEMORY_H
#define COARCH_CX_MEMORY_H

#include <stdint.h>

#include "cx_error.h"
#include "cx_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cx_pressure {
    CX_PRESSURE_LOW = 0,
    CX_PRESSURE_MODERATE = 1,
    CX_PRESSURE_HIGH = 2,
    CX_PRESSURE_CRITICAL = 3
} cx_pressure;

typedef enum cx_limit_source {
    CX_LIMIT_EXPLICIT = 0, /* the caller's limit_mb */
    CX_LIMIT_CGROUP = 1,   /* the cgroup's memory.max / memory.limit_in_bytes */
    CX_LIMIT_SYSTEM = 2    /* MemAvailable at start plus our RSS at start */
} cx_limit_source;

/* "explicit", "cgroup" or "system" (static strings; "system" for an unknown value). */
const char *cx_memory_limit_source_name(cx_limit_source source);

/* Flags returned by cx_memory_after_batch: what the caller should do before the next batch. */
enum {
    CX_MEMORY_ACTION_GC = 1,           /* run Python's garbage collector (needs the GIL) */
    CX_MEMORY_ACTION_TRIM = 2,         /* done by the manager: malloc_trim(0) */
    CX_MEMORY_ACTION_CUDA_RELEASE = 4, /* done by the manager via cx_backend_cuda_empty_cache */
    CX_MEMORY_ACTION_WAIT = 8          /* pressure was critical: cx_memory_wait_for_relief next */
};

typedef struct cx_memory cx_memory; /* opaque */

/* The caller's settings; see cx_memory_new. */
typedef struct cx_memory_options {
    int64_t limit_bytes;    /* explicit limit, 0 for none */
    const char *profile;    /* "default", "conservative", "aggressive", "development" or NULL */
    int adaptive;           /* 0: fixed budget (max_batch_tokens), no adaptation */
    int64_t min_batch_tokens, max_batch_tokens; /* 0 for defaults */
    double critical_wait_seconds; /* bound of the wait at CRITICAL: 0 for the default 10 s,
                                     negative for no wait */
    const char *cgroup_root; /* NULL or "/" for this system; a folder holding proc/self/cgroup and
                                sys/fs/cgroup/... to read a fixture instead (tests) */
} cx_memory_options;

/* A manager for `options` (NULL: all defaults). Returns NULL and fills `err` (and `status`,
 * which may be NULL, as cx_model_open does) on CX_ERR_ARGUMENT (unknown profile, negative
 * limit, min > max tokens), CX_ERR_IO (/proc/self/status unreadable, a malformed cgroup limit
 * file) or CX_ERR_NOMEM. The caller frees it with cx_memory_free. */
cx_memory *cx_memory_new(const cx_memory_options *options, cx_status *status, cx_error *err);
void cx_memory_free(cx_memory *memory);

/* Tokens (batch x padded length) the next batch may hold, predicted from the model's shape so
 * that it fits in the headroom under the limit (the first budget of a model lands halfway
 * between MODERATE and HIGH; no batch alone may carry usage past CRITICAL), then adapted by
 * measured pressure, within [min, max], and never below seq_len (one row). `config` NULL:
 * the attached model's (or all-MiniLM-L6-v2's); a non-NULL config is remembered. seq_len < 1:
 * the config's max_seq_length. With adaptive = 0 the answer is always max_batch_tokens. */
int64_t cx_memory_batch_tokens(cx_memory *memory, const cx_bert_config *config, int64_t seq_len);

/* Reserves `bytes` against the budget for one batch (released by cx_memory_release): the RSS
 * now, plus other batches' reservations, plus what `bytes` adds beyond the held buffers it will
 * reuse (cx_memory_set_held) must stay within the limit. Returns CX_ERR_MEMORY_LIMIT with a
 * message naming the sizes when even this reservation cannot fit. With a CUDA model the host
 * check is skipped (the scratch lives on the GPU). Releasing marks the bytes as held. */
cx_status cx_memory_reserve(cx_memory *memory, int64_t bytes, cx_error *err);
void cx_memory_release(cx_memory *memory, int64_t bytes);

/* Reads pressure after a batch, adapts the budget, runs the hooks that need no GIL (trim, CUDA
 * release), counts every action, and returns the CX_MEMORY_ACTION_* flags. */
int cx_memory_after_batch(cx_memory *memory);

/* At CRITICAL: sleeps in short steps until pressure falls below CRITICAL or the bounded wait
 * ends. Returns CX_OK either way (counted as a wait). A wait that ends still CRITICAL stops
 * cx_memory_after_batch from asking for more (no CX_MEMORY_ACTION_WAIT) until a reading falls
 * below CRITICAL: memory nobody gives back is not worth stalling every batch for. */
cx_status cx_memory_wait_for_relief(cx_memory *memory);

/* Records that the caller ran the garbage collector (the gc_runs counter). */
void cx_memory_count_gc(cx_memory *memory);

/* The pressure now: the usage is the largest of RSS / limit, the cgroup's usage (minus its
 * inactive file cache) / the cgroup's limit, and GPU reserved / GPU total with a CUDA model,
 * judged against the profile's thresholds. No allocation, tens of microseconds. */
cx_pressure cx_memory_pressure(cx_memory *memory);

/* ---- Extensions: the model's shape, exact accounting and readings. ---- */

/* Pressure thresholds as fractions of the limit: usage >= moderate is MODERATE, >= high is HIGH
 * (gc + trim), >= critical is CRITICAL (also CUDA release and the bounded wait).
 *   default       0.60 / 0.75 / 0.90
 *   conservative  0.45 / 0.60 / 0.80  (8 GB machines: warn at 60 %, critical at 80 %)
 *   aggressive    0.55 / 0.70 / 0.85  (16 GB and more: warn at 70 %, critical at 85 %)
 *   development   0.40 / 0.50 / 0.65  (trips every hook early, so development runs exercise
 *                                      gc, trim and the wait long before a real limit) */
typedef struct cx_memory_thresholds {
    double moderate, high, critical;
} cx_memory_thresholds;

/* Fills `out` for `profile` (NULL means "default"). CX_ERR_ARGUMENT for an unknown name. */
cx_status cx_memory_profile_thresholds(const char *profile, cx_memory_thresholds *out,
                                       cx_error *err);

/* The model the budget is predicted for (copied), and whether its forward runs on CUDA (then
 * GPU memory is part of the readings and the pressure, and the scratch is counted on the GPU).
 * Until called, cx_memory_batch_tokens uses the config it is passed, or all-MiniLM-L6-v2's. */
void cx_memory_attach_model(cx_memory *memory, const cx_bert_config *config, int uses_cuda);

/* Host bytes of one [rows, seq_len] batch: cx_footprint_scratch_bytes (for the calling thread's
 * intra-op threads) plus the loop's padded ids, lengths and output rows. Pure arithmetic. */
int64_t cx_memory_batch_bytes(const cx_bert_config *config, int64_t rows, int64_t seq_len);

/* Refuses a limit too small for the model itself: the RSS now, plus `weights_bytes` (weights
 * that will still become resident: 0 when they already are, negative to estimate them from the
 * config as float32), plus one batch of one text at the model's max_seq_length must stay under
 * the CRITICAL threshold. `config` NULL: the attached one. Returns CX_OK, or
 * CX_ERR_MEMORY_LIMIT with a message that gives the smallest workable limit in MB. */
cx_status cx_memory_check_model(cx_memory *memory, const cx_bert_config *config,
                                int64_t weights_bytes, cx_error *err);

/* Bytes that the caller's reusable batch buffers hold now (already in the RSS; the next batch
 * reuses them, e.g. cx_bert_scratch_held). Without this call the manager assumes the largest
 * reservation so far stays held (as cx_bert's grown scratch does) until a release hook runs. */
void cx_memory_set_held(cx_memory *memory, int64_t bytes);

/* cx_memory_after_batch with a hook that frees the caller's caches (e.g. cx_bert_release_scratch)
 * at HIGH and CRITICAL, run before malloc_trim so that their pages go back to the system; the
 * held bytes are then taken as 0. `release` may be NULL. No GIL needed or taken. */
int cx_memory_after_batch_release(cx_memory *memory, void (*release)(void *context),
                                  void *context);

/* malloc_trim(0) now, counted (glibc; a no-op elsewhere). Returns 1 when memory was returned. */
int cx_memory_trim(cx_memory *memory);

/* Releases the CUDA cache now when CUDA is available, counted. */
void cx_memory_release_cuda(cx_memory *memory);

typedef struct cx_memory_stats {
    int64_t rss_bytes, peak_rss_bytes;  /* VmRSS, VmHWM */
    int64_t available_bytes, total_bytes; /* MemAvailable, MemTotal now */
    int64_t limit_bytes;                /* the effective limit */
    cx_limit_source limit_source;
    int64_t cgroup_limit_bytes;         /* 0 when the cgroup sets none */
    int64_t cgroup_usage_bytes;         /* cgroup usage minus inactive file cache; -1 unknown */
    int cgroup_version;                 /* 0 (none found), 1 or 2 */
    double usage;                       /* the fraction the pressure was judged from */
    cx_pressure pressure;
    cx_memory_thresholds thresholds;
    const char *profile;                /* static string */
    int adaptive;
    int64_t batch_tokens;               /* last budget answered (the adapted one before any) */
    int64_t min_batch_tokens, max_batch_tokens;
    int64_t reserved_bytes, held_bytes;
    int64_t batches, gc_runs, trims, waits, cuda_releases;
    int cuda_available, uses_cuda;
    int64_t gpu_reserved_bytes, gpu_total_bytes; /* zeros unless the model runs on CUDA */
    double critical_wait_seconds;
} cx_memory_stats;

/* A consistent snapshot: takes fresh readings. Never fails (unreadable values read as 0). */
void cx_memory_get_stats(cx_memory *memory, cx_memory_stats *out);

#ifdef __cplusplus
}
#endif

#endif
