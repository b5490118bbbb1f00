/* test_memory.c: plain C tests of cx_memory and cx_sysmem (no Python, no libtorch).
 *
 * Usage: test_memory [CGROUP_FIXTURES]   (default: ../data/cgroup, as run from tests/c)
 * The libtorch functions cx_memory calls (cx_backend.h) are replaced by the stubs below: one
 * intra-op thread and no CUDA; the scratch formula is the encoder's own (cx_footprint.c). Ballast is mmap'ed and touched here to
 * move the real RSS (munmap gives it back at once, under AddressSanitizer too). Exits 0 when
 * every check passes. Build and run with `make -C tests/c check` (or `asan`). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "cx_backend.h"
#include "cx_memory.h"
#include "cx_sysmem.h"

#include "check.h"

#define MIB ((int64_t)1024 * 1024)

/* ---- stubs of cx_backend.cpp ------------------------------------------------------------- */

int cx_backend_threads(void) { return 1; }
int cx_backend_cuda_available(void) { return 0; }
cx_status cx_backend_cuda_empty_cache(cx_error *err) { (void)err; return CX_OK; }
cx_status cx_backend_cuda_memory(int64_t *reserved, int64_t *total, cx_error *err)
{
    (void)err;
    *reserved = *total = 0;
    return CX_OK;
}

/* ---- helpers ----------------------------------------------------------------------------- */

static const cx_bert_config minilm = {30522, 384, 6, 12, 1536, 512, 2, 1e-12, 256, 1};

static int64_t rss_now(void)
{
    cx_error err = {{0}};
    cx_memory *m = cx_memory_new(NULL, NULL, &err);
    cx_memory_stats s;
    cx_memory_get_stats(m, &s);
    cx_memory_free(m);
    return s.rss_bytes;
}

static cx_memory *manager(int64_t limit_bytes, double wait, cx_error *err)
{
    cx_memory_options o = {.limit_bytes = limit_bytes, .adaptive = 1, .critical_wait_seconds = wait,
                           .max_batch_tokens = 2048};
    return cx_memory_new(&o, NULL, err);
}

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* `bytes` of anonymous memory, every page touched: resident until munmap. */
static char *ballast_new(size_t bytes)
{
    char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    memset(p, 1, bytes);
    return p;
}

static int released_count;
static void count_release(void *context) { released_count += *(int *)context; }

/* ---- tests ------------------------------------------------------------------------------- */

static void test_cgroup(const char *fixtures)
{
    static const struct {
        const char *name;
        int version;
        int64_t limit, usage;
    } cases[] = {
        {"v2", 2, 512 * MIB, 150 * MIB},         {"v2-max", 2, 0, 66 * MIB},
        {"v2-parent", 2, 768 * MIB, 100 * MIB},  {"v2-full", 2, 512 * MIB, 480 * MIB},
        {"v1", 1, 800 * MIB, 200 * MIB},         {"v1-unlimited", 1, 0, 3751936 - 786432},
        {"v1-container", 1, 400 * MIB, 50 * MIB}, {"none", 0, 0, -1},
        {"no-such-root", 0, 0, -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        char root[512];
        snprintf(root, sizeof root, "%s/%s", fixtures, cases[i].name);
        cx_cgroup_info info;
        cx_error err = {{0}};
        cx_status status = cx_sysmem_read_cgroup(root, &info, &err);
        CHECK(status == CX_OK, "%s: %s", cases[i].name, err.message);
        CHECK(info.version == cases[i].version, "%s: version %d", cases[i].name, info.version);
        CHECK(info.limit_bytes == cases[i].limit, "%s: limit %lld", cases[i].name,
              (long long)info.limit_bytes);
        CHECK(info.usage_bytes == cases[i].usage, "%s: usage %lld", cases[i].name,
              (long long)info.usage_bytes);
    }
    char root[512];
    snprintf(root, sizeof root, "%s/bad", fixtures);
    cx_cgroup_info info;
    cx_error err = {{0}};
    CHECK(cx_sysmem_read_cgroup(root, &info, &err) == CX_ERR_IO, "bad limit file");
    CHECK(strstr(err.message, "not a number or \"max\": lots") != NULL, "%s", err.message);

    /* As the manager's limit: the cgroup wins over a larger explicit limit. */
    snprintf(root, sizeof root, "%s/v1", fixtures);
    cx_memory_options o = {.limit_bytes = 900 * MIB, .cgroup_root = root};
    cx_memory *m = cx_memory_new(&o, NULL, &err);
    cx_memory_stats s;
    cx_memory_get_stats(m, &s);
    CHECK(s.limit_bytes == 800 * MIB && s.limit_source == CX_LIMIT_CGROUP, "cgroup limit wins");
    cx_memory_free(m);
}

static void test_options(void)
{
    cx_error err = {{0}};
    cx_status status = CX_OK;
    cx_memory_options o = {.profile = "lavish"};
    CHECK(cx_memory_new(&o, &status, &err) == NULL && status == CX_ERR_ARGUMENT, "profile");
    CHECK(strstr(err.message, "memory profile (lavish): unknown") != NULL, "%s", err.message);
    o = (cx_memory_options){.min_batch_tokens = 600, .max_batch_tokens = 500};
    CHECK(cx_memory_new(&o, &status, &err) == NULL && status == CX_ERR_ARGUMENT, "min > max");
    o = (cx_memory_options){.limit_bytes = -1};
    CHECK(cx_memory_new(&o, &status, &err) == NULL && status == CX_ERR_ARGUMENT, "negative");
    cx_memory_thresholds t;
    CHECK(cx_memory_profile_thresholds("conservative", &t, &err) == CX_OK && t.high == 0.60 &&
              t.critical == 0.80,
          "conservative");
    CHECK(cx_memory_profile_thresholds(NULL, &t, &err) == CX_OK && t.moderate == 0.60 &&
              t.high == 0.75 && t.critical == 0.90,
          "default");
}

static void test_pressure_and_speed(void)
{
    cx_error err = {{0}};
    cx_memory *m = manager(1 * MIB, 0, &err);
    CHECK(cx_memory_pressure(m) == CX_PRESSURE_CRITICAL, "1 MB limit");
    double started = seconds();
    for (int i = 0; i < 10000; ++i)
        cx_memory_pressure(m);
    double per_call = (seconds() - started) / 10000;
    CHECK(per_call < 200e-6, "pressure takes %.1f us", per_call * 1e6);
    cx_memory_free(m);
    m = manager(0, 0, &err); /* the system's limit: this tiny process is LOW */
    CHECK(cx_memory_pressure(m) == CX_PRESSURE_LOW, "no limit");
    cx_memory_free(m);
}

static void test_reserve_and_held(void)
{
    cx_error err = {{0}};
    const int64_t rss = rss_now();
    cx_memory *m = manager(rss + 100 * MIB, 0, &err);
    CHECK(cx_memory_reserve(m, 60 * MIB, &err) == CX_OK, "60 of 100 MB free: %s", err.message);
    CHECK(cx_memory_reserve(m, 60 * MIB, &err) == CX_ERR_MEMORY_LIMIT, "60 more do not fit");
    CHECK(strstr(err.message, "a batch needs 60.0 MB more") != NULL, "%s", err.message);
    cx_memory_release(m, 60 * MIB);
    cx_memory_stats s;
    cx_memory_get_stats(m, &s);
    CHECK(s.reserved_bytes == 0, "released");
    CHECK(s.held_bytes == 60 * MIB, "the batch's buffers are assumed kept");

    /* Held buffers are only credited as far as the RSS really grew: nothing was allocated. */
    CHECK(cx_memory_reserve(m, 110 * MIB, &err) == CX_ERR_MEMORY_LIMIT, "not credited");
    /* Once they are really resident, the next batch of that size needs no new memory. */
    char *scratch = ballast_new((size_t)(60 * MIB));
    cx_memory_set_held(m, 60 * MIB);
    CHECK(cx_memory_reserve(m, 60 * MIB, &err) == CX_OK, "reused: %s", err.message);
    cx_memory_release(m, 60 * MIB);
    munmap(scratch, (size_t)(60 * MIB));
    cx_memory_free(m);
}

static void test_budget(void)
{
    cx_error err = {{0}};
    cx_memory *m = manager(0, 0, &err);
    CHECK(cx_memory_batch_tokens(m, &minilm, 128) == 2048, "room to spare: the maximum");
    CHECK(cx_memory_batch_tokens(m, &minilm, 4096) == 4096, "never below one row");
    cx_memory_free(m);

    /* The first budget lands halfway between MODERATE and HIGH (67.5 %), weights included. */
    const int64_t rss = rss_now();
    const int64_t five = cx_memory_batch_bytes(&minilm, 5, 128);
    const int64_t six = cx_memory_batch_bytes(&minilm, 6, 128);
    const int64_t weights = 90261504; /* all-MiniLM-L6-v2, float32 */
    const int64_t room = five + (six - five) / 2; /* bf16 rows are padded: not 5.5 x one row */
    m = manager((int64_t)((double)(rss + weights + room) / 0.675), 0, &err);
    int64_t tokens = cx_memory_batch_tokens(m, &minilm, 128);
    CHECK(tokens == 5 * 128, "5.5 rows of room: %lld tokens", (long long)tokens);
    cx_memory_free(m);

    /* Fixed budget without adaptation, whatever the pressure. */
    cx_memory_options o = {.limit_bytes = MIB, .adaptive = 0, .max_batch_tokens = 1000};
    m = cx_memory_new(&o, NULL, &err);
    CHECK(cx_memory_batch_tokens(m, &minilm, 100) == 1000, "fixed");
    CHECK((cx_memory_after_batch(m) & CX_MEMORY_ACTION_TRIM) != 0, "hooks still run");
    CHECK(cx_memory_batch_tokens(m, &minilm, 100) == 1000, "still fixed");
    cx_memory_free(m);
}

static void test_hooks_under_ballast(void)
{
    cx_error err = {{0}};
    const int64_t rss = rss_now();
    const int64_t limit = rss + 200 * MIB;
    cx_memory *m = manager(limit, 0.1, &err);
    int64_t low = cx_memory_batch_tokens(m, &minilm, 64);
    int actions = cx_memory_after_batch(m);
    CHECK(actions == 0, "LOW: no action (%d)", actions);
    CHECK(cx_memory_batch_tokens(m, &minilm, 64) >= low, "LOW: grows or stays at the max");

    /* HIGH: ballast to 82 % of the limit. */
    const size_t high_bytes = (size_t)((double)limit * 0.82 - (double)rss);
    char *ballast = ballast_new(high_bytes);
    int64_t before = cx_memory_batch_tokens(m, &minilm, 64);
    int context = 1;
    released_count = 0;
    actions = cx_memory_after_batch_release(m, count_release, &context);
    CHECK(actions == (CX_MEMORY_ACTION_GC | CX_MEMORY_ACTION_TRIM), "HIGH: gc + trim (%d)",
          actions);
    CHECK(released_count == 1, "HIGH: the release hook ran");
    int64_t after = cx_memory_batch_tokens(m, &minilm, 64);
    CHECK(after <= before * 3 / 4 + 64, "HIGH: x0.75 (%lld -> %lld)", (long long)before,
          (long long)after);
    cx_memory_count_gc(m);

    /* CRITICAL: ballast to 93 %; one bounded wait, then no more while nothing changes. */
    const size_t more_bytes = (size_t)((double)limit * 0.11);
    char *more = ballast_new(more_bytes);
    before = after;
    actions = cx_memory_after_batch(m);
    CHECK((actions & CX_MEMORY_ACTION_WAIT) != 0, "CRITICAL: wait (%d)", actions);
    CHECK((actions & CX_MEMORY_ACTION_CUDA_RELEASE) == 0, "no CUDA here");
    after = cx_memory_batch_tokens(m, &minilm, 64);
    CHECK(after <= before / 2 + 64 || after == 128, "CRITICAL: halved (%lld -> %lld)",
          (long long)before, (long long)after);
    double started = seconds();
    cx_memory_wait_for_relief(m);
    double waited = seconds() - started;
    CHECK(waited >= 0.09 && waited < 1.0, "bounded wait: %.2f s", waited);
    actions = cx_memory_after_batch(m);
    CHECK((actions & CX_MEMORY_ACTION_WAIT) == 0, "no second wait while still CRITICAL");

    /* Relief: the ballast goes, pressure falls, waits are allowed again. */
    munmap(ballast, high_bytes);
    munmap(more, more_bytes);
    cx_memory_trim(m);
    actions = cx_memory_after_batch(m);
    CHECK(actions == 0, "relieved (%d)", actions);
    cx_memory_stats s;
    cx_memory_get_stats(m, &s);
    CHECK(s.gc_runs == 1 && s.waits == 1 && s.trims == 4 && s.batches == 5,
          "counters gc %lld waits %lld trims %lld batches %lld", (long long)s.gc_runs,
          (long long)s.waits, (long long)s.trims, (long long)s.batches);
    cx_memory_free(m);
}

static void test_check_model(void)
{
    cx_error err = {{0}};
    cx_memory *m = manager(64 * MIB, 0, &err);
    CHECK(cx_memory_check_model(m, &minilm, -1, &err) == CX_ERR_MEMORY_LIMIT, "64 MB");
    CHECK(strstr(err.message, "memory limit (64 MB, explicit): too small for the model") != NULL,
          "%s", err.message);
    const char *at_least = strstr(err.message, "at least ");
    long long minimum = at_least != NULL ? atoll(at_least + 9) : 0;
    CHECK(minimum > 90, "minimum %lld MB", minimum);
    cx_memory_free(m);
    m = manager((minimum + 1) * MIB, 0, &err);
    CHECK(cx_memory_check_model(m, &minilm, -1, &err) == CX_OK, "the named minimum works: %s",
          err.message);
    cx_memory_free(m);
}

int main(int argc, char **argv)
{
    const char *fixtures = argc > 1 ? argv[1] : "../data/cgroup";
    test_cgroup(fixtures);
    test_options();
    test_pressure_and_speed();
    test_reserve_and_held();
    test_budget();
    test_hooks_under_ballast();
    test_check_model();
    printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
