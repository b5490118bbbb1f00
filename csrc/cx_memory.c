/* cx_memory.c: the MemoryManager engine: the limit, pressure, the batch budget (predicted from
 * the model's shape, then adapted to measured pressure), reservations, and the hooks that need
 * no GIL (malloc_trim, CUDA cache release, the bounded wait).
 *
 * The reading path (cx_memory_pressure, and the readings inside after_batch, reserve and
 * batch_tokens) allocates nothing (cx_sysmem.h). State that changes after creation is guarded
 * by one mutex, so encode loops on several threads may share a manager. */
#include "cx_memory.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "cx_backend.h"
#include "cx_footprint.h"
#include "cx_sysmem.h"

#define MIB ((int64_t)1024 * 1024)
#define DEFAULT_MIN_TOKENS 128
/* The loop's own default (cx_encode.c), so a manager with room to spare changes nothing. */
#define DEFAULT_MAX_TOKENS 8192
#define DEFAULT_CRITICAL_WAIT 10.0
#define WAIT_STEP_SECONDS 0.05

struct cx_memory {
    pthread_mutex_t lock; /* guards every field marked (locked) */

    /* Settings, fixed at creation. */
    cx_memory_thresholds thresholds;
    const char *profile; /* static string */
    int adaptive;
    int64_t min_tokens, max_tokens;
    double critical_wait; /* seconds; <= 0: no wait */

    /* The limit, fixed at creation. */
    int64_t explicit_limit, system_limit; /* 0 where there is none */
    int64_t limit;                                      /* the smallest: the effective limit */
    int64_t rss_at_start;                               /* VmRSS when the manager was created */
    cx_limit_source limit_source;
    cx_cgroup_info cgroup; /* its limit (0: none) and where its usage is read; version 0: none */
    int cuda_available;

    /* The model (locked). */
    cx_bert_config config;
    int uses_cuda;
    int warm; /* 0 until a batch of this model ran: its weights may not be resident yet */

    /* Budget and accounting (locked). */
    int64_t budget;      /* adapted budget in padded tokens; 0 until predicted */
    int64_t last_tokens; /* last answer of cx_memory_batch_tokens */
    int64_t reserved;    /* bytes reserved by batches in flight */
    int64_t held;        /* bytes the caller's reusable buffers hold (already in RSS) */
    int held_reported;   /* 1 once cx_memory_set_held was called: no more guessing */
    int wait_exhausted;  /* a wait ended still CRITICAL: no more until pressure falls */
    cx_pressure last_pressure;

    /* Counters (locked). */
    int64_t batches, gc_runs, trims, waits, cuda_releases;
};

/* all-MiniLM-L6-v2: the shape budgets and checks assume until a model is attached (or passed to
 * cx_memory_batch_tokens); from then on they use that model's config. */
static const cx_bert_config minilm_config = {
    .vocab_size = 30522,
    .hidden_size = 384,
    .num_layers = 6,
    .num_heads = 12,
    .intermediate_size = 1536,
    .max_position_embeddings = 512,
    .type_vocab_size = 2,
    .layer_norm_eps = 1e-12,
    .max_seq_length = 256,
    .do_lower_case = 1,
};

/* ---- Profiles and pressure. ---- */

const char *cx_memory_limit_source_name(cx_limit_source source)
{
    switch (source) {
    case CX_LIMIT_EXPLICIT:
        return "explicit";
    case CX_LIMIT_CGROUP:
        return "cgroup";
    case CX_LIMIT_SYSTEM:
        break;
    }
    return "system";
}

cx_status cx_memory_profile_thresholds(const char *profile, cx_memory_thresholds *out,
                                       cx_error *err)
{
    static const struct {
        const char *name;
        cx_memory_thresholds thresholds;
    } profiles[] = {
        {"default", {0.60, 0.75, 0.90}},
        {"conservative", {0.45, 0.60, 0.80}},
        {"aggressive", {0.55, 0.70, 0.85}},
        {"development", {0.40, 0.50, 0.65}},
    };
    if (profile == NULL || profile[0] == '\0')
        profile = "default";
    for (size_t i = 0; i < sizeof profiles / sizeof profiles[0]; ++i) {
        if (strcmp(profile, profiles[i].name) == 0) {
            *out = profiles[i].thresholds;
            return CX_OK;
        }
    }
    return cx_error_set(err, CX_ERR_ARGUMENT,
                        "memory profile (%.40s): unknown; expected default, conservative, "
                        "aggressive or development",
                        profile);
}

static const char *profile_name(const char *profile)
{
    static const char *const names[] = {"default", "conservative", "aggressive", "development"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; ++i)
        if (profile != NULL && strcmp(profile, names[i]) == 0)
            return names[i];
    return names[0];
}

static cx_pressure classify(const cx_memory_thresholds *t, double usage)
{
    if (usage >= t->critical)
        return CX_PRESSURE_CRITICAL;
    if (usage >= t->high)
        return CX_PRESSURE_HIGH;
    if (usage >= t->moderate)
        return CX_PRESSURE_MODERATE;
    return CX_PRESSURE_LOW;
}

/* One set of readings and the usage fraction judged from them: the largest of RSS / limit,
 * cgroup usage / cgroup limit, and (with a CUDA model) GPU reserved / GPU total. */
typedef struct reading {
    int64_t rss, peak;
    int64_t cgroup_usage;
    int64_t gpu_reserved, gpu_total;
    double usage;
} reading;

static void take_reading(cx_memory *m, int uses_cuda, reading *r)
{
    cx_sysmem_read_process(&r->rss, &r->peak);
    r->usage = r->rss > 0 && m->limit > 0 ? (double)r->rss / (double)m->limit : 0.0;
    r->cgroup_usage = -1;
    if (m->cgroup.limit_bytes > 0) {
        r->cgroup_usage = cx_sysmem_cgroup_usage(&m->cgroup);
        if (r->cgroup_usage > 0) {
            double fraction = (double)r->cgroup_usage / (double)m->cgroup.limit_bytes;
            if (fraction > r->usage)
                r->usage = fraction;
        }
    }
    r->gpu_reserved = r->gpu_total = 0;
    if (uses_cuda && m->cuda_available) {
        cx_error ignored;
        if (cx_backend_cuda_memory(&r->gpu_reserved, &r->gpu_total, &ignored) == CX_OK &&
            r->gpu_total > 0) {
            double fraction = (double)r->gpu_reserved / (double)r->gpu_total;
            if (fraction > r->usage)
                r->usage = fraction;
        }
    }
}

static int uses_cuda_of(cx_memory *m)
{
    pthread_mutex_lock(&m->lock);
    int uses_cuda = m->uses_cuda;
    pthread_mutex_unlock(&m->lock);
    return uses_cuda;
}

cx_pressure cx_memory_pressure(cx_memory *memory)
{
    reading r;
    take_reading(memory, uses_cuda_of(memory), &r);
    return classify(&memory->thresholds, r.usage);
}

/* ---- Creation. ---- */

cx_memory *cx_memory_new(const cx_memory_options *options, cx_status *status, cx_error *err)
{
    cx_status ignored_status;
    if (status == NULL)
        status = &ignored_status;
    cx_memory_options defaults = {0};
    if (options == NULL)
        options = &defaults;
    cx_memory_thresholds thresholds;
    if ((*status = cx_memory_profile_thresholds(options->profile, &thresholds, err)) != CX_OK)
        return NULL;
    if (options->limit_bytes < 0) {
        *status = cx_error_set(err, CX_ERR_ARGUMENT,
                               "memory limit (%lld bytes): must be positive",
                               (long long)options->limit_bytes);
        return NULL;
    }
    int64_t min_tokens = options->min_batch_tokens > 0 ? options->min_batch_tokens
                                                       : DEFAULT_MIN_TOKENS;
    int64_t max_tokens = options->max_batch_tokens > 0 ? options->max_batch_tokens
                                                       : DEFAULT_MAX_TOKENS;
    if (options->min_batch_tokens < 0 || options->max_batch_tokens < 0 || min_tokens > max_tokens) {
        *status = cx_error_set(err, CX_ERR_ARGUMENT,
                               "batch tokens (min %lld, max %lld): need 0 < min <= max",
                               (long long)min_tokens, (long long)max_tokens);
        return NULL;
    }
    cx_cgroup_info cgroup;
    if ((*status = cx_sysmem_read_cgroup(options->cgroup_root, &cgroup, err)) != CX_OK)
        return NULL;
    int64_t rss, peak, available, total;
    cx_sysmem_read_process(&rss, &peak);
    if (rss < 0) {
        *status = cx_error_set(err, CX_ERR_IO,
                               "memory readings (/proc/self/status): cannot read VmRSS");
        return NULL;
    }
    cx_sysmem_read_system(&available, &total);

    cx_memory *m = calloc(1, sizeof *m);
    if (m == NULL) {
        *status = cx_error_set(err, CX_ERR_NOMEM,
                               "cannot create the memory manager: out of memory");
        return NULL;
    }
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        *status = cx_error_set(err, CX_ERR_NOMEM,
                               "cannot create the memory manager: no mutex");
        return NULL;
    }
    m->thresholds = thresholds;
    m->profile = profile_name(options->profile);
    m->adaptive = options->adaptive != 0;
    m->min_tokens = min_tokens;
    m->max_tokens = max_tokens;
    m->critical_wait = options->critical_wait_seconds == 0.0 ? DEFAULT_CRITICAL_WAIT
                                                             : options->critical_wait_seconds;

    m->explicit_limit = options->limit_bytes;
    m->system_limit = available >= 0 ? available + rss : (total > 0 ? total : 0);
    m->cgroup = cgroup;
    /* The smallest wins; ties go to the more specific source. */
    m->limit = m->system_limit;
    m->limit_source = CX_LIMIT_SYSTEM;
    if (m->cgroup.limit_bytes > 0 && (m->limit == 0 || m->cgroup.limit_bytes <= m->limit)) {
        m->limit = m->cgroup.limit_bytes;
        m->limit_source = CX_LIMIT_CGROUP;
    }
    if (m->explicit_limit > 0 && (m->limit == 0 || m->explicit_limit <= m->limit)) {
        m->limit = m->explicit_limit;
        m->limit_source = CX_LIMIT_EXPLICIT;
    }
    m->rss_at_start = rss;
    m->cuda_available = cx_backend_cuda_available();
    m->config = minilm_config;
    m->budget = 0;
    m->last_tokens = max_tokens;
    m->last_pressure = CX_PRESSURE_LOW;
    *status = CX_OK;
    return m;
}

void cx_memory_free(cx_memory *memory)
{
    if (memory == NULL)
        return;
    pthread_mutex_destroy(&memory->lock);
    free(memory);
}

static int same_shape(const cx_bert_config *a, const cx_bert_config *b)
{
    return a->vocab_size == b->vocab_size && a->hidden_size == b->hidden_size &&
           a->num_layers == b->num_layers && a->num_heads == b->num_heads &&
           a->intermediate_size == b->intermediate_size &&
           a->max_position_embeddings == b->max_position_embeddings &&
           a->type_vocab_size == b->type_vocab_size && a->max_seq_length == b->max_seq_length;
}

/* Remembers `config` (NULL: keep the current one); a new model is not warm. Lock held. */
static void set_config(cx_memory *m, const cx_bert_config *config)
{
    if (config == NULL || same_shape(config, &m->config))
        return;
    m->config = *config;
    m->warm = 0;
    m->budget = 0; /* predicted afresh for this model */
}

void cx_memory_attach_model(cx_memory *memory, const cx_bert_config *config, int uses_cuda)
{
    pthread_mutex_lock(&memory->lock);
    set_config(memory, config);
    memory->uses_cuda = uses_cuda != 0;
    pthread_mutex_unlock(&memory->lock);
}

/* ---- The budget. ---- */

/* The loop's own buffers for one batch: padded int32 ids, int32 lengths, float32 vectors. */
static int64_t loop_bytes(const cx_bert_config *config, int64_t rows, int64_t seq_len)
{
    return rows * seq_len * 4 + rows * 4 + rows * config->hidden_size * 4;
}

/* Scratch bytes of a batch for the calling thread's intra-op thread count, as the forward pass
 * that follows on this thread will grow it. */
static int64_t scratch_bytes(const cx_bert_config *config, int64_t rows, int64_t seq_len)
{
    return cx_footprint_scratch_bytes(config, rows, seq_len, cx_backend_threads());
}

int64_t cx_memory_batch_bytes(const cx_bert_config *config, int64_t rows, int64_t seq_len)
{
    return scratch_bytes(config, rows, seq_len) + loop_bytes(config, rows, seq_len);
}

/* Host bytes of a batch under this manager: with a CUDA model the scratch lives on the GPU. */
static int64_t host_bytes(const cx_bert_config *config, int uses_cuda, int64_t rows,
                          int64_t seq_len)
{
    return uses_cuda ? loop_bytes(config, rows, seq_len)
                     : cx_memory_batch_bytes(config, rows, seq_len);
}

/* The most rows in [1, max_rows] whose bytes(rows) fit in `headroom` (1 when none does);
 * bytes() grows with rows, so a binary search finds it in ~13 steps. */
static int64_t rows_fitting(const cx_bert_config *config, int uses_cuda, int on_gpu,
                            int64_t seq_len, int64_t max_rows, int64_t headroom)
{
    int64_t lo = 1, hi = max_rows;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        int64_t bytes = on_gpu ? scratch_bytes(config, mid, seq_len)
                               : host_bytes(config, uses_cuda, mid, seq_len);
        if (bytes <= headroom)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* The held bytes that can really be in the RSS: buffers grown after the manager was created
 * cannot exceed what the RSS grew by since (guards against a caller whose buffers are gone). */
static int64_t held_in(const cx_memory *m, int64_t rss)
{
    if (m->uses_cuda)
        return 0;
    int64_t grown = rss - m->rss_at_start;
    if (grown < 0)
        grown = 0;
    return m->held < grown ? m->held : grown;
}

/* Tokens of the largest batch whose bytes fit under `fraction` of the limit (and of the GPU
 * with a CUDA model), at least one row. Memory the caller's reusable buffers hold counts as free
 * (the batch reuses it); weights of a model that has not run yet count as used (they become
 * resident during its first forward pass). Called with the lock held. */
static int64_t fit_tokens(const cx_memory *m, const reading *r, int64_t seq_len, double fraction)
{
    const int64_t max_rows = m->max_tokens / seq_len > 0 ? m->max_tokens / seq_len : 1;
    int64_t baseline = r->rss - held_in(m, r->rss) + m->reserved;
    if (!m->warm && !m->uses_cuda)
        baseline += cx_footprint_weights_bytes(&m->config);
    const int64_t target = (int64_t)((double)m->limit * fraction);
    int64_t rows =
        rows_fitting(&m->config, m->uses_cuda, 0, seq_len, max_rows, target - baseline);
    if (m->uses_cuda && r->gpu_total > 0) {
        int64_t gpu_used = r->gpu_reserved - m->held;
        int64_t gpu_target = (int64_t)((double)r->gpu_total * fraction);
        int64_t gpu_rows = rows_fitting(&m->config, 1, 1, seq_len, max_rows,
                                        gpu_target - (gpu_used > 0 ? gpu_used : 0));
        if (gpu_rows < rows)
            rows = gpu_rows;
    }
    return rows * seq_len;
}

static int64_t clamp_tokens(const cx_memory *m, int64_t tokens)
{
    if (tokens < m->min_tokens)
        tokens = m->min_tokens;
    if (tokens > m->max_tokens)
        tokens = m->max_tokens;
    return tokens;
}

/* The first budget of a model is predicted to land halfway between the MODERATE and HIGH
 * thresholds, so that the batches themselves do not trip the hooks and the estimate has room;
 * from then on the measured pressure adapts it (see adapt). Whatever the budget, one batch may
 * not carry the usage past the CRITICAL threshold on its own. */
int64_t cx_memory_batch_tokens(cx_memory *memory, const cx_bert_config *config, int64_t seq_len)
{
    reading r;
    take_reading(memory, uses_cuda_of(memory), &r);
    pthread_mutex_lock(&memory->lock);
    set_config(memory, config);
    if (seq_len < 1)
        seq_len = memory->config.max_seq_length > 0 ? memory->config.max_seq_length : 1;
    int64_t tokens = memory->max_tokens;
    if (memory->adaptive) {
        const cx_memory_thresholds *t = &memory->thresholds;
        if (memory->budget == 0)
            memory->budget =
                clamp_tokens(memory, fit_tokens(memory, &r, seq_len, (t->moderate + t->high) / 2));
        int64_t hard = fit_tokens(memory, &r, seq_len, t->critical);
        tokens = clamp_tokens(memory, hard < memory->budget ? hard : memory->budget);
    }
    if (tokens < seq_len)
        tokens = seq_len; /* a batch holds at least one row */
    memory->last_tokens = tokens;
    pthread_mutex_unlock(&memory->lock);
    return tokens;
}

/* Halve at CRITICAL and x0.75 at HIGH from what the last batch used; grow by 10 % at LOW,
 * hold at MODERATE. Called with the lock held. */
static void adapt(cx_memory *m, cx_pressure pressure)
{
    if (m->budget == 0)
        return; /* no batch was sized yet */
    const int64_t used = m->last_tokens < m->budget ? m->last_tokens : m->budget;
    switch (pressure) {
    case CX_PRESSURE_CRITICAL:
        m->budget = clamp_tokens(m, used / 2);
        break;
    case CX_PRESSURE_HIGH:
        m->budget = clamp_tokens(m, used * 3 / 4);
        break;
    case CX_PRESSURE_MODERATE:
        break;
    case CX_PRESSURE_LOW:
        m->budget = clamp_tokens(m, m->budget + (m->budget / 10 > 0 ? m->budget / 10 : 1));
        break;
    }
}

/* ---- Reservations. ---- */

cx_status cx_memory_reserve(cx_memory *memory, int64_t bytes, cx_error *err)
{
    if (bytes < 0)
        return cx_error_set(err, CX_ERR_ARGUMENT, "memory reservation (%lld bytes): negative",
                            (long long)bytes);
    int64_t rss, peak;
    cx_sysmem_read_process(&rss, &peak);
    pthread_mutex_lock(&memory->lock);
    int64_t extra = bytes - held_in(memory, rss);
    if (extra < 0)
        extra = 0;
    const int64_t in_use = (rss > 0 ? rss : 0) + memory->reserved;
    if (!memory->uses_cuda && in_use + extra > memory->limit) {
        int64_t limit = memory->limit, reserved = memory->reserved;
        const char *source = cx_memory_limit_source_name(memory->limit_source);
        pthread_mutex_unlock(&memory->lock);
        return cx_error_set(err, CX_ERR_MEMORY_LIMIT,
                            "memory limit (%lld MB, %s): a batch needs %.1f MB more but only "
                            "%.1f MB are free (%.1f MB in use, %.1f MB reserved); raise the "
                            "limit or lower max_seq_length",
                            (long long)(limit / MIB), source, (double)extra / MIB,
                            (double)(limit - in_use > 0 ? limit - in_use : 0) / MIB,
                            (double)rss / MIB, (double)reserved / MIB);
    }
    memory->reserved += bytes;
    pthread_mutex_unlock(&memory->lock);
    return CX_OK;
}

void cx_memory_release(cx_memory *memory, int64_t bytes)
{
    pthread_mutex_lock(&memory->lock);
    memory->reserved -= bytes;
    if (memory->reserved < 0)
        memory->reserved = 0;
    /* The batch's buffers stay allocated for reuse (cx_bert grows its scratch, never shrinks
     * it), so they are now held. */
    if (!memory->held_reported && bytes > memory->held)
        memory->held = bytes;
    pthread_mutex_unlock(&memory->lock);
}

void cx_memory_set_held(cx_memory *memory, int64_t bytes)
{
    pthread_mutex_lock(&memory->lock);
    memory->held = bytes > 0 ? bytes : 0;
    memory->held_reported = 1;
    pthread_mutex_unlock(&memory->lock);
}

/* ---- Hooks. ---- */

int cx_memory_trim(cx_memory *memory)
{
    int released = 0;
#if defined(__GLIBC__)
    released = malloc_trim(0);
#endif
    pthread_mutex_lock(&memory->lock);
    memory->trims++;
    pthread_mutex_unlock(&memory->lock);
    return released;
}

void cx_memory_release_cuda(cx_memory *memory)
{
    if (!memory->cuda_available)
        return;
    cx_error ignored;
    if (cx_backend_cuda_empty_cache(&ignored) != CX_OK)
        return;
    pthread_mutex_lock(&memory->lock);
    memory->cuda_releases++;
    pthread_mutex_unlock(&memory->lock);
}

int cx_memory_after_batch_release(cx_memory *memory, void (*release)(void *context),
                                  void *context)
{
    reading r;
    take_reading(memory, uses_cuda_of(memory), &r);
    const cx_pressure pressure = classify(&memory->thresholds, r.usage);
    pthread_mutex_lock(&memory->lock);
    memory->batches++;
    memory->warm = 1;
    memory->last_pressure = pressure;
    if (memory->adaptive)
        adapt(memory, pressure);
    if (pressure < CX_PRESSURE_CRITICAL)
        memory->wait_exhausted = 0;
    const int may_wait = memory->critical_wait > 0 && !memory->wait_exhausted;
    pthread_mutex_unlock(&memory->lock);

    int actions = 0;
    if (pressure >= CX_PRESSURE_HIGH) {
        if (release != NULL) {
            release(context);
            pthread_mutex_lock(&memory->lock);
            memory->held = 0;
            pthread_mutex_unlock(&memory->lock);
        }
        cx_memory_trim(memory);
        actions |= CX_MEMORY_ACTION_GC | CX_MEMORY_ACTION_TRIM;
    }
    if (pressure == CX_PRESSURE_CRITICAL) {
        if (memory->cuda_available) {
            cx_memory_release_cuda(memory);
            actions |= CX_MEMORY_ACTION_CUDA_RELEASE;
        }
        if (may_wait)
            actions |= CX_MEMORY_ACTION_WAIT;
    }
    return actions;
}

int cx_memory_after_batch(cx_memory *memory)
{
    return cx_memory_after_batch_release(memory, NULL, NULL);
}

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

cx_status cx_memory_wait_for_relief(cx_memory *memory)
{
    if (memory->critical_wait <= 0 || cx_memory_pressure(memory) < CX_PRESSURE_CRITICAL)
        return CX_OK;
    pthread_mutex_lock(&memory->lock);
    memory->waits++;
    pthread_mutex_unlock(&memory->lock);
    const double deadline = now_seconds() + memory->critical_wait;
    for (;;) {
        double left = deadline - now_seconds();
        if (left <= 0) {
            /* Nothing gave memory back in time: waiting again before pressure falls would only
             * stall the work, so the next waits are skipped until it does. */
            pthread_mutex_lock(&memory->lock);
            memory->wait_exhausted = 1;
            pthread_mutex_unlock(&memory->lock);
            break;
        }
        double step = left < WAIT_STEP_SECONDS ? left : WAIT_STEP_SECONDS;
        struct timespec pause = {(time_t)step, (long)((step - (double)(time_t)step) * 1e9)};
        nanosleep(&pause, NULL);
        if (cx_memory_pressure(memory) < CX_PRESSURE_CRITICAL)
            break;
    }
    return CX_OK;
}

void cx_memory_count_gc(cx_memory *memory)
{
    pthread_mutex_lock(&memory->lock);
    memory->gc_runs++;
    pthread_mutex_unlock(&memory->lock);
}

/* ---- The model check. ---- */

cx_status cx_memory_check_model(cx_memory *memory, const cx_bert_config *config,
                                int64_t weights_bytes, cx_error *err)
{
    cx_bert_config attached;
    if (config == NULL) {
        pthread_mutex_lock(&memory->lock);
        attached = memory->config;
        pthread_mutex_unlock(&memory->lock);
        config = &attached;
    }
    int64_t rss, peak;
    cx_sysmem_read_process(&rss, &peak);
    const int uses_cuda = uses_cuda_of(memory);
    const int64_t seq_len = config->max_seq_length > 0 ? config->max_seq_length
                                                     : config->max_position_embeddings;
    const int64_t one_text = host_bytes(config, uses_cuda, 1, seq_len);
    if (weights_bytes < 0)
        weights_bytes = cx_footprint_weights_bytes(config);
    const int64_t needed = (rss > 0 ? rss : 0) + weights_bytes + one_text;
    /* The smallest limit under which that still reads below CRITICAL. */
    const int64_t workable = (int64_t)((double)needed / memory->thresholds.critical) + 1;
    if (workable <= memory->limit)
        return CX_OK;
    return cx_error_set(err, CX_ERR_MEMORY_LIMIT,
                        "memory limit (%lld MB, %s): too small for the model: %.0f MB in use, "
                        "%.0f MB of weights and %.1f MB for one %lld-token text need a limit of "
                        "at least %lld MB (the %s profile's critical threshold is %.0f %%)",
                        (long long)(memory->limit / MIB),
                        cx_memory_limit_source_name(memory->limit_source),
                        (double)rss / MIB, (double)weights_bytes / MIB, (double)one_text / MIB,
                        (long long)seq_len, (long long)((workable + MIB - 1) / MIB),
                        memory->profile, memory->thresholds.critical * 100);
}

/* ---- Stats. ---- */

void cx_memory_get_stats(cx_memory *memory, cx_memory_stats *out)
{
    memset(out, 0, sizeof *out);
    reading r;
    take_reading(memory, uses_cuda_of(memory), &r);
    int64_t available, total;
    cx_sysmem_read_system(&available, &total);
    out->rss_bytes = r.rss > 0 ? r.rss : 0;
    out->peak_rss_bytes = r.peak > 0 ? r.peak : 0;
    out->available_bytes = available > 0 ? available : 0;
    out->total_bytes = total > 0 ? total : 0;
    out->usage = r.usage;
    out->pressure = classify(&memory->thresholds, r.usage);
    out->gpu_reserved_bytes = r.gpu_reserved;
    out->gpu_total_bytes = r.gpu_total;
    out->cgroup_usage_bytes = r.cgroup_usage;

    pthread_mutex_lock(&memory->lock);
    out->limit_bytes = memory->limit;
    out->limit_source = memory->limit_source;
    out->cgroup_limit_bytes = memory->cgroup.limit_bytes;
    out->cgroup_version = memory->cgroup.version;
    out->thresholds = memory->thresholds;
    out->profile = memory->profile;
    out->adaptive = memory->adaptive;
    out->batch_tokens = memory->last_tokens;
    out->min_batch_tokens = memory->min_tokens;
    out->max_batch_tokens = memory->max_tokens;
    out->reserved_bytes = memory->reserved;
    out->held_bytes = memory->held;
    out->batches = memory->batches;
    out->gc_runs = memory->gc_runs;
    out->trims = memory->trims;
    out->waits = memory->waits;
    out->cuda_releases = memory->cuda_releases;
    out->cuda_available = memory->cuda_available;
    out->uses_cuda = memory->uses_cuda;
    out->critical_wait_seconds = memory->critical_wait > 0 ? memory->critical_wait : 0;
    pthread_mutex_unlock(&memory->lock);
}
