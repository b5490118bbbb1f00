/* memory_type.c: coarch._core.MemoryManager, the Python face of the cx_memory engine.
 *
 * The engine does the work (readings, pressure, budget, trim); this file converts arguments,
 * runs the one action that needs the GIL (the garbage collector) and builds the stats dict.
 * coarch.memory.MemoryManager subclasses this type to read the COARCH_* environment variables
 * and to return MemoryPressure members; the Embedder takes either (cx_memory_manager_get). */
#include "core.h"

#include "cx_memory.h"
#include "cx_sysmem.h"

#define MIB (1024.0 * 1024.0)

typedef struct {
    PyObject_HEAD
    cx_memory *memory; /* owned; NULL until __init__ succeeds */
} MemoryManager;

static cx_memory *require_memory(MemoryManager *self)
{
    if (self->memory == NULL)
        PyErr_SetString(PyExc_RuntimeError, "MemoryManager was not initialised");
    return self->memory;
}

struct cx_memory *cx_memory_manager_get(cx_module_state *state, PyObject *object)
{
    if (state == NULL)
        return NULL;
    if (!PyObject_TypeCheck(object, state->memory_manager_type)) {
        PyErr_Format(PyExc_TypeError, "memory must be a coarch.MemoryManager, not %.100s",
                     Py_TYPE(object)->tp_name);
        return NULL;
    }
    return require_memory((MemoryManager *)object);
}

/* limit_mb: None, or an int or float > 0 (bool refused); stored as bytes (MB = 2**20 bytes). */
static int parse_limit_mb(PyObject *value, int64_t *bytes)
{
    *bytes = 0;
    if (value == Py_None)
        return 0;
    if (PyBool_Check(value) || !(PyLong_Check(value) || PyFloat_Check(value))) {
        PyErr_Format(PyExc_TypeError, "limit_mb must be a number of megabytes or None, not %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    double mb = PyFloat_AsDouble(value);
    if (mb == -1.0 && PyErr_Occurred())
        return -1;
    if (!(mb > 0) || mb > 1e12) {
        PyErr_Format(PyExc_ValueError, "limit_mb must be a positive number of megabytes, not %R",
                     value);
        return -1;
    }
    *bytes = (int64_t)(mb * MIB);
    return 0;
}

static int MemoryManager_init(MemoryManager *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"limit_mb",         "profile",         "adaptive",
                               "min_batch_tokens", "max_batch_tokens", "critical_wait_s",
                               "_cgroup_root",     NULL};
    PyObject *limit = Py_None, *root = Py_None, *root_bytes = NULL;
    const char *profile = NULL;
    int adaptive = 1;
    Py_ssize_t min_tokens = 0, max_tokens = 0;
    double critical_wait = 10.0;
    if (self->memory != NULL) {
        /* The engine manager may be borrowed by an encode running without the GIL, and the
         * Embedders that use it attached their model to it: replacing it would free memory in
         * use and lose the model. */
        PyErr_SetString(PyExc_RuntimeError, "MemoryManager is already initialised; create a new "
                                            "one for other settings");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|Ozp$nndO", keywords, &limit, &profile,
                                     &adaptive, &min_tokens, &max_tokens, &critical_wait, &root))
        return -1;
    cx_memory_options options = {0};
    if (parse_limit_mb(limit, &options.limit_bytes) < 0)
        return -1;
    if (min_tokens < 0 || max_tokens < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "min_batch_tokens and max_batch_tokens must not be negative");
        return -1;
    }
    if (!(critical_wait >= 0) || critical_wait > 3600) {
        PyObject *value = PyFloat_FromDouble(critical_wait);
        if (value != NULL)
            PyErr_Format(PyExc_ValueError,
                         "critical_wait_s must be between 0 and 3600 seconds, not %R", value);
        Py_XDECREF(value);
        return -1;
    }
    if (root != Py_None && !PyUnicode_FSConverter(root, &root_bytes))
        return -1;
    options.profile = profile;
    options.adaptive = adaptive;
    options.min_batch_tokens = min_tokens;
    options.max_batch_tokens = max_tokens;
    options.critical_wait_seconds = critical_wait > 0 ? critical_wait : -1.0; /* 0: no wait */
    options.cgroup_root = root_bytes != NULL ? PyBytes_AS_STRING(root_bytes) : NULL;

    cx_error err;
    cx_error_clear(&err);
    cx_status status = CX_OK;
    cx_memory *memory = cx_memory_new(&options, &status, &err);
    Py_XDECREF(root_bytes);
    if (memory == NULL) {
        cx_raise(cx_state_of(self), status, &err);
        return -1;
    }
    self->memory = memory;
    return 0;
}

static void MemoryManager_dealloc(MemoryManager *self)
{
    cx_memory_free(self->memory);
    cx_object_free((PyObject *)self);
}

static PyObject *MemoryManager_pressure(MemoryManager *self, PyObject *unused)
{
    cx_memory *memory = require_memory(self);
    return memory != NULL ? PyLong_FromLong((long)cx_memory_pressure(memory)) : NULL;
}

static PyObject *MemoryManager_optimal_batch_tokens(MemoryManager *self, PyObject *args,
                                                    PyObject *kwargs)
{
    static char *keywords[] = {"seq_len", NULL};
    Py_ssize_t seq_len = 0;
    cx_memory *memory = require_memory(self);
    if (memory == NULL || !PyArg_ParseTupleAndKeywords(args, kwargs, "|n", keywords, &seq_len))
        return NULL;
    if (seq_len < 0)
        return PyErr_Format(PyExc_ValueError, "seq_len must not be negative, not %zd", seq_len);
    return PyLong_FromLongLong(cx_memory_batch_tokens(memory, NULL, seq_len));
}

static PyObject *MemoryManager_collect(MemoryManager *self, PyObject *unused)
{
    cx_memory *memory = require_memory(self);
    if (memory == NULL)
        return NULL;
    Py_ssize_t collected = PyGC_Collect();
    cx_memory_count_gc(memory);
    Py_BEGIN_ALLOW_THREADS
    cx_memory_trim(memory);
    cx_memory_release_cuda(memory);
    Py_END_ALLOW_THREADS
    return PyLong_FromSsize_t(collected);
}

static PyObject *mb_or_none(int64_t bytes)
{
    return bytes > 0 ? PyFloat_FromDouble((double)bytes / MIB) : Py_NewRef(Py_None);
}

/* Fresh stats of an initialised manager; -1 with RuntimeError set when it is not one. */
static int read_stats(MemoryManager *self, cx_memory_stats *stats)
{
    cx_memory *memory = require_memory(self);
    if (memory == NULL)
        return -1;
    cx_memory_get_stats(memory, stats);
    return 0;
}

static PyObject *MemoryManager_stats(MemoryManager *self, PyObject *unused)
{
    cx_memory_stats s;
    if (read_stats(self, &s) < 0)
        return NULL;
    return Py_BuildValue(
        "{s:d,s:d,s:d,s:d,s:d,s:s,s:i,s:d,s:L,s:L,s:L,s:L,s:L,s:L,s:O,"
        "s:s,s:O,s:(ddd),s:L,s:L,s:d,s:d,s:i,s:N,s:N,s:O,s:d,s:d,s:d}",
        "rss_mb", (double)s.rss_bytes / MIB, "peak_rss_mb", (double)s.peak_rss_bytes / MIB,
        "available_mb", (double)s.available_bytes / MIB, "total_mb", (double)s.total_bytes / MIB,
        "limit_mb", (double)s.limit_bytes / MIB, "limit_source",
        cx_memory_limit_source_name(s.limit_source),
        "pressure", (int)s.pressure, "usage", s.usage, "batch_tokens", (long long)s.batch_tokens,
        "batches", (long long)s.batches, "gc_runs", (long long)s.gc_runs, "trims",
        (long long)s.trims, "waits", (long long)s.waits, "cuda_releases",
        (long long)s.cuda_releases, "cuda_available", s.cuda_available ? Py_True : Py_False,
        "profile", s.profile, "adaptive", s.adaptive ? Py_True : Py_False, "thresholds",
        s.thresholds.moderate, s.thresholds.high, s.thresholds.critical, "min_batch_tokens",
        (long long)s.min_batch_tokens, "max_batch_tokens", (long long)s.max_batch_tokens,
        "reserved_mb", (double)s.reserved_bytes / MIB, "held_mb", (double)s.held_bytes / MIB,
        "cgroup_version", s.cgroup_version, "cgroup_limit_mb", mb_or_none(s.cgroup_limit_bytes),
        "cgroup_usage_mb", mb_or_none(s.cgroup_usage_bytes), "uses_cuda",
        s.uses_cuda ? Py_True : Py_False, "gpu_reserved_mb", (double)s.gpu_reserved_bytes / MIB,
        "gpu_total_mb", (double)s.gpu_total_bytes / MIB, "critical_wait_s",
        s.critical_wait_seconds);
}

static PyObject *MemoryManager_check_model(MemoryManager *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"weights_bytes", NULL};
    long long weights = -1;
    cx_memory *memory = require_memory(self);
    if (memory == NULL || !PyArg_ParseTupleAndKeywords(args, kwargs, "|L", keywords, &weights))
        return NULL;
    cx_error err;
    cx_error_clear(&err);
    cx_status status = cx_memory_check_model(memory, NULL, (int64_t)weights, &err);
    if (status != CX_OK)
        return cx_raise(cx_state_of(self), status, &err);
    Py_RETURN_NONE;
}

static PyObject *MemoryManager_parse_cgroup(PyTypeObject *type, PyObject *root)
{
    PyObject *root_bytes = NULL;
    if (!PyUnicode_FSConverter(root, &root_bytes))
        return NULL;
    cx_cgroup_info info;
    cx_error err;
    cx_error_clear(&err);
    cx_status status = cx_sysmem_read_cgroup(PyBytes_AS_STRING(root_bytes), &info, &err);
    Py_DECREF(root_bytes);
    if (status != CX_OK)
        return cx_raise(cx_state_of_type(type), status, &err);
    PyObject *version = info.version != 0 ? PyLong_FromLong(info.version) : Py_NewRef(Py_None);
    PyObject *limit =
        info.limit_bytes > 0 ? PyLong_FromLongLong(info.limit_bytes) : Py_NewRef(Py_None);
    PyObject *usage =
        info.usage_bytes >= 0 ? PyLong_FromLongLong(info.usage_bytes) : Py_NewRef(Py_None);
    if (version == NULL || limit == NULL || usage == NULL) {
        Py_XDECREF(version);
        Py_XDECREF(limit);
        Py_XDECREF(usage);
        return NULL;
    }
    return Py_BuildValue("{s:N,s:N,s:N,s:s}", "version", version, "limit_bytes", limit,
                         "usage_bytes", usage, "directory", info.directory);
}

/* The settings read as attributes; each getter's closure is one of these. */
enum { SETTING_LIMIT_MB, SETTING_LIMIT_SOURCE, SETTING_PROFILE, SETTING_ADAPTIVE };

static PyObject *MemoryManager_get_setting(MemoryManager *self, void *closure)
{
    cx_memory_stats s;
    if (read_stats(self, &s) < 0)
        return NULL;
    switch ((intptr_t)closure) {
    case SETTING_LIMIT_MB:
        return PyFloat_FromDouble((double)s.limit_bytes / MIB);
    case SETTING_LIMIT_SOURCE:
        return PyUnicode_FromString(cx_memory_limit_source_name(s.limit_source));
    case SETTING_PROFILE:
        return PyUnicode_FromString(s.profile);
    default:
        return PyBool_FromLong(s.adaptive);
    }
}

static PyMethodDef MemoryManager_methods[] = {
    {"pressure", (PyCFunction)MemoryManager_pressure, METH_NOARGS,
     "pressure() -> int\n\n0 LOW, 1 MODERATE, 2 HIGH, 3 CRITICAL, from the usage of the limit "
     "(RSS,\nthe cgroup's usage, GPU memory with a CUDA model). Allocates nothing."},
    {"optimal_batch_tokens", (PyCFunction)(void (*)(void))MemoryManager_optimal_batch_tokens,
     METH_VARARGS | METH_KEYWORDS,
     "optimal_batch_tokens(seq_len=0) -> int\n\nPadded tokens the next batch of texts "
     "seq_len tokens long may hold (0: the\nmodel's max_seq_length), predicted from the "
     "model's shape and the headroom, adapted\nto measured pressure."},
    {"collect", (PyCFunction)MemoryManager_collect, METH_NOARGS,
     "collect() -> int\n\nRuns Python's garbage collector, malloc_trim(0) and the CUDA cache "
     "release\n(counted); returns the objects the collector freed."},
    {"stats", (PyCFunction)MemoryManager_stats, METH_NOARGS,
     "stats() -> dict\n\nFresh readings (rss_mb, peak_rss_mb, available_mb, limit_mb, "
     "limit_source, pressure,\n...), the budget and the action counters."},
    {"_check_model", (PyCFunction)(void (*)(void))MemoryManager_check_model,
     METH_VARARGS | METH_KEYWORDS,
     "_check_model(weights_bytes=-1)\n\nRaises MemoryLimitError when the limit is too small "
     "for the attached model\n(weights_bytes: still to become resident; -1 estimates them)."},
    {"_parse_cgroup", (PyCFunction)(void (*)(void))MemoryManager_parse_cgroup, METH_O | METH_CLASS,
     "_parse_cgroup(root) -> dict\n\nThe memory cgroup as seen under `root` (tests): version, "
     "limit_bytes, usage_bytes,\ndirectory."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef MemoryManager_getset[] = {
    {"limit_mb", (getter)MemoryManager_get_setting, NULL, "The effective limit in MB.",
     (void *)(intptr_t)SETTING_LIMIT_MB},
    {"limit_source", (getter)MemoryManager_get_setting, NULL,
     "Which limit won: 'explicit', 'cgroup' or 'system'.", (void *)(intptr_t)SETTING_LIMIT_SOURCE},
    {"profile", (getter)MemoryManager_get_setting, NULL, "The threshold profile's name.",
     (void *)(intptr_t)SETTING_PROFILE},
    {"adaptive", (getter)MemoryManager_get_setting, NULL,
     "Whether the budget adapts to pressure.", (void *)(intptr_t)SETTING_ADAPTIVE},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot MemoryManager_slots[] = {
    {Py_tp_doc,
     "MemoryManager(limit_mb=None, profile=None, adaptive=True, *, min_batch_tokens=0,\n"
     "              max_batch_tokens=0, critical_wait_s=10.0)\n\n"
     "Keeps embedding inside a memory limit: the smallest of limit_mb, the cgroup's limit and\n"
     "what the machine can give. profile: 'default' (60/75/90 %), 'conservative' (45/60/80),\n"
     "'aggressive' (55/70/85) or 'development' (40/50/65). critical_wait_s=0: no wait."},
    {Py_tp_init, MemoryManager_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, MemoryManager_dealloc},
    {Py_tp_methods, MemoryManager_methods},
    {Py_tp_getset, MemoryManager_getset},
    {0, NULL},
};

static PyType_Spec MemoryManager_spec = {
    .name = "coarch._core.MemoryManager",
    .basicsize = sizeof(MemoryManager),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = MemoryManager_slots,
};

int cx_memory_manager_type_setup(PyObject *module, cx_module_state *state)
{
    return cx_type_add(module, &MemoryManager_spec, &state->memory_manager_type);
}
