/* core.h: private header shared by the bridge files (module.c and one file per Python type).
 *
 * Bridge files convert Python objects, release the GIL around engine calls and raise
 * exceptions. Engine files (cx_*.c) never include this header or Python.h. */
#ifndef COARCH_CORE_H
#define COARCH_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "cx_error.h"

/* Module state: the exception classes and types, one instance per module object (multi-phase
 * init, as CPython's _sqlite). Bridge functions find it from a type or an object of one of the
 * module's types (cx_state_of_type, cx_state_of), never from a global. Every field is a strong
 * reference, listed in module.c's STATE_REFERENCES, which the module's traverse and clear walk. */
typedef struct cx_module_state {
    PyObject *error;           /* coarch._core.CoreError(Exception): base of the tree */
    PyObject *model_error;     /* ModelError(CoreError, ValueError): unusable model folder */
    PyObject *memory_limit_error; /* MemoryLimitError(CoreError, MemoryError) */
    PyTypeObject *embedder_type;
    PyTypeObject *tokenizer_type;
    PyTypeObject *memory_manager_type;
} cx_module_state;

/* The state of the coarch._core module that defined `type` or, for a subclass (such as
 * coarch.memory.MemoryManager), the nearest base it defined (PyType_GetModuleByDef; borrowed).
 * NULL with TypeError set when no base comes from this module. */
cx_module_state *cx_state_of_type(PyTypeObject *type);
#define cx_state_of(object) cx_state_of_type(Py_TYPE(object))

/* Maps an engine status and its message to a Python exception, the one place that does so:
 *   CX_ERR_NOMEM -> MemoryError, CX_ERR_IO -> OSError, CX_ERR_FORMAT/CX_ERR_MODEL -> ModelError,
 *   CX_ERR_BACKEND -> CoreError, CX_ERR_INTERRUPTED -> KeyboardInterrupt,
 *   CX_ERR_ARGUMENT -> ValueError, CX_ERR_MEMORY_LIMIT -> MemoryLimitError.
 * The classes are `state`'s (NULL: the lookup failed and its exception is kept). Always returns
 * NULL so callers can `return cx_raise(...)`. If a Python exception is already set (a hook
 * raised), it is kept. */
PyObject *cx_raise(cx_module_state *state, cx_status status, const cx_error *err);

/* The same for errors while loading a model folder: every status but CX_ERR_NOMEM becomes
 * ModelError, so a wrong model folder is one clear message whatever went wrong in it. */
PyObject *cx_raise_loading(cx_module_state *state, cx_status status, const cx_error *err);

/* Type setup functions, one per bridge file: create the heap type, add it to `module` and store
 * it in the state. Return 0, or -1 with an exception set. */
int cx_embedder_type_setup(PyObject *module, cx_module_state *state);
int cx_tokenizer_type_setup(PyObject *module, cx_module_state *state);
int cx_memory_manager_type_setup(PyObject *module, cx_module_state *state);

/* What each setup function does: creates the heap type of `spec` for `module` into *type (a
 * reference the state owns) and adds it to `module` under its name after the last dot. Returns
 * 0, or -1 with an exception set (*type may then hold the type, which the state's clear drops). */
int cx_type_add(PyObject *module, PyType_Spec *spec, PyTypeObject **type);

/* The end of every tp_dealloc of these heap types, after the object's own fields are released:
 * tp_free, then the reference to its type that each instance of a heap type holds. */
void cx_object_free(PyObject *self);

/* UTF-8 of a str for the engine. Lone surrogates (which strict UTF-8 refuses) are encoded with
 * "surrogatepass", giving bytes the tokenizer decodes as invalid (dropped, see cx_tokenizer.h).
 * On success *data and *length are valid while *keepalive (a new reference, possibly NULL when the
 * str's cached UTF-8 is used) and `text` live. Returns 0, or -1 with an exception set. */
int cx_utf8_of(PyObject *text, const char **data, Py_ssize_t *length, PyObject **keepalive);

/* A new list of `count` ints from `ids` (NULL is fine when count is 0); NULL with an exception
 * set on failure. */
PyObject *cx_ids_to_list(const int32_t *ids, int64_t count);

/* The engine manager of a coarch._core.MemoryManager of `state`'s module (memory_type.c),
 * borrowed while `object` lives; NULL with TypeError set when `object` is not one. */
struct cx_memory;
struct cx_memory *cx_memory_manager_get(cx_module_state *state, PyObject *object);

#endif
