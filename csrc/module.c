/* module.c: the coarch._core module (multi-phase init): its state (exception classes, types),
 * the one mapping from engine statuses to Python exceptions, the helpers core.h declares for the
 * type files, and functions about the backend. */
#include "core.h"

#include <stddef.h>

#include "cx_backend.h"
#include "cx_threads.h"

static struct PyModuleDef core_module;

cx_module_state *cx_state_of_type(PyTypeObject *type)
{
    PyObject *module = PyType_GetModuleByDef(type, &core_module);
    return module != NULL ? (cx_module_state *)PyModule_GetState(module) : NULL;
}

static const char *message_or(const cx_error *err, const char *fallback)
{
    return err != NULL && err->message[0] != '\0' ? err->message : fallback;
}

/* The exception class of an engine status (borrowed: a builtin or one of the state's). */
static PyObject *exception_of(const cx_module_state *state, cx_status status)
{
    switch (status) {
    case CX_ERR_NOMEM: return PyExc_MemoryError;
    case CX_ERR_IO: return PyExc_OSError;
    case CX_ERR_FORMAT:
    case CX_ERR_MODEL: return state->model_error;
    case CX_ERR_INTERRUPTED: return PyExc_KeyboardInterrupt;
    case CX_ERR_ARGUMENT: return PyExc_ValueError;
    case CX_ERR_MEMORY_LIMIT: return state->memory_limit_error;
    default: return state->error;
    }
}

PyObject *cx_raise(cx_module_state *state, cx_status status, const cx_error *err)
{
    if (state == NULL || PyErr_Occurred())
        return NULL; /* a hook (progress callback, signal handler) raised: keep its exception */
    PyErr_SetString(exception_of(state, status), message_or(err, "coarch core error"));
    return NULL;
}

PyObject *cx_raise_loading(cx_module_state *state, cx_status status, const cx_error *err)
{
    if (state == NULL || PyErr_Occurred())
        return NULL;
    if (status == CX_ERR_NOMEM)
        return cx_raise(state, status, err);
    PyErr_SetString(state->model_error, message_or(err, "cannot load the model"));
    return NULL;
}

int cx_utf8_of(PyObject *text, const char **data, Py_ssize_t *length, PyObject **keepalive)
{
    *keepalive = NULL;
    *data = PyUnicode_AsUTF8AndSize(text, length);
    if (*data != NULL)
        return 0;
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
        return -1;
    /* Lone surrogates: pass them through as the invalid bytes they are; the tokenizer drops
     * invalid UTF-8 (see cx_tokenizer.h), so such a str encodes like its valid parts. */
    PyErr_Clear();
    *keepalive = PyUnicode_AsEncodedString(text, "utf-8", "surrogatepass");
    if (*keepalive == NULL)
        return -1;
    *data = PyBytes_AS_STRING(*keepalive);
    *length = PyBytes_GET_SIZE(*keepalive);
    return 0;
}

PyObject *cx_ids_to_list(const int32_t *ids, int64_t count)
{
    PyObject *list = PyList_New((Py_ssize_t)count);
    if (list == NULL)
        return NULL;
    for (int64_t i = 0; i < count; i++) {
        /* ids is NULL only with count <= 0 (encode_ids), which the analyzer cannot see. */
        PyObject *id = PyLong_FromLong(ids[i]); /* NOLINT(clang-analyzer-core.NullDereference) */
        if (id == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, id);
    }
    return list;
}

static PyObject *available_cores(PyObject *module, PyObject *unused)
{
    return PyLong_FromLong(cx_threads_available());
}

static PyObject *backend_info(PyObject *module, PyObject *unused)
{
    return Py_BuildValue("{s:i,s:i,s:s,s:O,s:s}", "torch_threads", cx_backend_threads(),
                         "blas_threads", cx_threads_blas(), "blas_core", cx_threads_blas_core(),
                         "cuda_available", cx_backend_cuda_available() ? Py_True : Py_False,
                         "libtorch", cx_backend_version());
}

static PyObject *bf16_native(PyObject *module, PyObject *unused)
{
    const char *reason = "";
    int native = cx_backend_bf16_native(&reason);
    return Py_BuildValue("(Os)", native ? Py_True : Py_False, reason);
}

static PyMethodDef core_functions[] = {
    {"bf16_native", bf16_native, METH_NOARGS,
     "bf16_native() -> (bool, str)\n\nWhether bf16 products are native on this machine and "
     "libtorch (from cpuid and\nlibtorch's oneDNN, never from a timing), and what was found."},
    {"available_cores", available_cores, METH_NOARGS,
     "available_cores() -> int\n\nCores in this process's affinity mask."},
    {"backend_info", backend_info, METH_NOARGS,
     "backend_info() -> dict\n\nThread counts of libtorch (the calling thread's) and OpenBLAS, "
     "OpenBLAS's core\ntype, CUDA availability and the libtorch version built against."},
    {NULL, NULL, 0, NULL},
};

int cx_type_add(PyObject *module, PyType_Spec *spec, PyTypeObject **type)
{
    *type = (PyTypeObject *)PyType_FromModuleAndSpec(module, spec, NULL);
    if (*type == NULL)
        return -1;
    return PyModule_AddType(module, *type);
}

void cx_object_free(PyObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    type->tp_free(self);
    Py_DECREF(type);
}

/* Every reference the state owns, as offsets of its fields: one list for traverse and clear. */
static const size_t STATE_REFERENCES[] = {
    offsetof(cx_module_state, error),
    offsetof(cx_module_state, model_error),
    offsetof(cx_module_state, memory_limit_error),
    offsetof(cx_module_state, embedder_type),
    offsetof(cx_module_state, tokenizer_type),
    offsetof(cx_module_state, memory_manager_type),
};
#define STATE_REFERENCE_COUNT (sizeof STATE_REFERENCES / sizeof STATE_REFERENCES[0])

static PyObject **state_reference(PyObject *module, size_t i)
{
    return (PyObject **)((char *)PyModule_GetState(module) + STATE_REFERENCES[i]);
}

static int core_traverse(PyObject *module, visitproc visit, void *arg)
{
    for (size_t i = 0; i < STATE_REFERENCE_COUNT; i++)
        Py_VISIT(*state_reference(module, i));
    return 0;
}

static int core_clear(PyObject *module)
{
    for (size_t i = 0; i < STATE_REFERENCE_COUNT; i++) {
        PyObject **reference = state_reference(module, i);
        Py_CLEAR(*reference);
    }
    return 0;
}

static void core_free(void *module)
{
    core_clear((PyObject *)module);
}

static int core_exec(PyObject *module);

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
    {0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "coarch._core",
    .m_doc = "coarch's C core: WordPiece tokenizer, safetensors loader, BERT forward pass over "
             "libtorch, the batch-embedding loop and the MemoryManager. Private: use coarch.",
    .m_size = sizeof(cx_module_state),
    .m_methods = core_functions,
    .m_slots = core_slots,
    .m_traverse = core_traverse,
    .m_clear = core_clear,
    .m_free = core_free,
};

static int add_exceptions(PyObject *module, cx_module_state *state)
{
    state->error = PyErr_NewExceptionWithDoc(
        "coarch._core.CoreError", "Base class of the errors raised by coarch's C core.", NULL,
        NULL);
    if (state->error == NULL)
        return -1;
    PyObject *bases = PyTuple_Pack(2, state->error, PyExc_ValueError);
    if (bases == NULL)
        return -1;
    state->model_error = PyErr_NewExceptionWithDoc(
        "coarch._core.ModelError",
        "A model folder that cannot be used: missing or unreadable files, a malformed config or "
        "safetensors header, a missing tensor or one of the wrong shape.",
        bases, NULL);
    Py_DECREF(bases);
    if (state->model_error == NULL)
        return -1;
    bases = PyTuple_Pack(2, state->error, PyExc_MemoryError);
    if (bases == NULL)
        return -1;
    state->memory_limit_error = PyErr_NewExceptionWithDoc(
        "coarch._core.MemoryLimitError",
        "Work that cannot fit under the memory limit, even one text alone.", bases, NULL);
    Py_DECREF(bases);
    if (state->memory_limit_error == NULL)
        return -1;
    if (PyModule_AddObjectRef(module, "CoreError", state->error) < 0 ||
        PyModule_AddObjectRef(module, "ModelError", state->model_error) < 0 ||
        PyModule_AddObjectRef(module, "MemoryLimitError", state->memory_limit_error) < 0)
        return -1;
    return 0;
}

/* Fills the state of a new module object: the exception classes, then one heap type per bridge
 * file. On failure (-1, exception set) Python discards the module. */
static int core_exec(PyObject *module)
{
    cx_module_state *state = PyModule_GetState(module);
    if (add_exceptions(module, state) < 0 || cx_embedder_type_setup(module, state) < 0 ||
        cx_tokenizer_type_setup(module, state) < 0 ||
        cx_memory_manager_type_setup(module, state) < 0)
        return -1;
    return 0;
}

PyMODINIT_FUNC PyInit__core(void)
{
    return PyModuleDef_Init(&core_module);
}
