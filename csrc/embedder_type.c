/* embedder_type.c: coarch._core.Embedder, the Python face of model + tokenizer + encoder + loop.
 *
 * Bridge rules: Python objects are read while holding the GIL (the texts are copied into a
 * tuple of our own, which keeps each str alive, and each str's UTF-8 pointer into a cx_text
 * array), then tokenize + forward + pool run in one released block over engine data only.
 * Between batches the hook re-takes the GIL to run the garbage collector when the MemoryManager
 * asks, check for Ctrl-C and call the progress callback. A lock serialises encode calls on one
 * Embedder, whose scratch buffers are shared. */
#include "core.h"

#include "pythread.h"

#include "cx_backend.h"
#include "cx_bert.h"
#include "cx_encode.h"
#include "cx_memory.h"
#include "cx_model.h"
#include "cx_threads.h"
#include "cx_tokenizer.h"

typedef struct {
    PyObject_HEAD
    cx_model *model;             /* owns the weights the encoder wraps; freed last */
    cx_tokenizer *tokenizer;     /* owned */
    cx_bert *bert;               /* owned; borrows the model's weights */
    cx_encode_scratch scratch;   /* owned buffers of the batch loop, guarded by `lock` */
    PyThread_type_lock lock;     /* owned; one encode at a time */
    PyObject *memory;            /* strong reference to a MemoryManager, or NULL */
    int64_t max_seq_length;      /* ids kept per text, <= the model's */
    int threads;                 /* libtorch intra-op threads of each encode (run_encode) */
} Embedder;

/* ---- construction ---------------------------------------------------------------------- */

typedef struct {
    cx_model *model;
    cx_tokenizer *tokenizer;
    cx_bert *bert;
    cx_status status;
    cx_error err;
} loaded_parts;

/* Engine work of the constructor, run without the GIL: open, tokenizer, encoder. */
static void load_parts(const char *directory, cx_device device, cx_precision precision,
                       loaded_parts *parts)
{
    parts->model = cx_model_open(directory, &parts->status, &parts->err);
    if (parts->model == NULL)
        return;
    const cx_bert_config *config = cx_model_config(parts->model);
    parts->tokenizer =
        cx_tokenizer_new(cx_model_vocab_path(parts->model), config->do_lower_case, &parts->err);
    if (parts->tokenizer == NULL) {
        parts->status = CX_ERR_MODEL;
        return;
    }
    if (cx_tokenizer_vocab_size(parts->tokenizer) > config->vocab_size) {
        parts->status = cx_error_set(
            &parts->err, CX_ERR_MODEL,
            "vocabulary does not match the model (%s): vocab.txt has %lld tokens, the "
            "embedding table %lld rows",
            directory, (long long)cx_tokenizer_vocab_size(parts->tokenizer),
            (long long)config->vocab_size);
        return;
    }
    parts->bert =
        cx_bert_new(config, cx_model_weights(parts->model), device, precision, &parts->err);
    if (parts->bert == NULL)
        parts->status = CX_ERR_BACKEND;
}

static void free_parts(loaded_parts *parts)
{
    cx_bert_free(parts->bert);
    cx_tokenizer_free(parts->tokenizer);
    cx_model_free(parts->model);
}

static int parse_device(const char *name, cx_device *device)
{
    if (strcmp(name, "cpu") == 0) {
        *device = CX_DEVICE_CPU;
        return 0;
    }
    if (strcmp(name, "cuda") == 0) {
        *device = CX_DEVICE_CUDA;
        return 0;
    }
    if (strcmp(name, "auto") == 0) {
        *device = cx_backend_cuda_available() ? CX_DEVICE_CUDA : CX_DEVICE_CPU;
        return 0;
    }
    PyErr_Format(PyExc_ValueError, "device must be 'cpu', 'cuda' or 'auto', not '%s'", name);
    return -1;
}

/* "fp32" or "bf16": a concrete precision. What "auto" means is decided in Python, once
 * (coarch.embedder.choose_precision), from the same cx_backend_bf16_native check (bf16_native). */
static int parse_precision(const char *name, cx_precision *precision)
{
    if (name == NULL) {
        PyErr_SetString(PyExc_TypeError, "Embedder() needs precision='fp32' or 'bf16' "
                                         "(coarch.Embedder resolves 'auto')");
        return -1;
    }
    if (strcmp(name, "fp32") == 0 || strcmp(name, "bf16") == 0) {
        *precision = name[0] == 'b' ? CX_PRECISION_BF16 : CX_PRECISION_FP32;
        return 0;
    }
    PyErr_Format(PyExc_ValueError,
                 "precision must be 'fp32' or 'bf16', not '%s' (coarch.Embedder resolves 'auto')",
                 name);
    return -1;
}

static int Embedder_init(Embedder *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"model_dir", "threads", "max_seq_length", "memory",
                               "device",    "precision", NULL};
    PyObject *path = NULL, *memory = Py_None;
    int threads = 0;
    Py_ssize_t max_seq_length = 0;
    const char *device_name = "cpu", *precision_name = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&|$inOss", keywords, PyUnicode_FSConverter,
                                     &path, &threads, &max_seq_length, &memory, &device_name,
                                     &precision_name))
        return -1;
    int result = -1;
    cx_device device;
    cx_precision precision;
    if (self->model != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Embedder is already initialised");
        goto done;
    }
    if (threads < 0 || max_seq_length < 0) {
        PyErr_SetString(PyExc_ValueError, "threads and max_seq_length must not be negative");
        goto done;
    }
    if (memory != Py_None && cx_memory_manager_get(cx_state_of(self), memory) == NULL)
        goto done;
    if (parse_device(device_name, &device) < 0)
        goto done;
    if (parse_precision(precision_name, &precision) < 0)
        goto done;

    loaded_parts parts = {0};
    const char *directory = PyBytes_AS_STRING(path);
    Py_BEGIN_ALLOW_THREADS
    load_parts(directory, device, precision, &parts);
    Py_END_ALLOW_THREADS
    if (parts.bert == NULL) {
        free_parts(&parts);
        cx_raise_loading(cx_state_of(self), parts.status, &parts.err);
        goto done;
    }
    const cx_bert_config *config = cx_model_config(parts.model);
    if (max_seq_length > config->max_seq_length) {
        PyErr_Format(PyExc_ValueError, "max_seq_length must be at most %lld for this model, not %zd",
                     (long long)config->max_seq_length, max_seq_length);
        free_parts(&parts);
        goto done;
    }
    if (max_seq_length == 1) {
        PyErr_SetString(PyExc_ValueError, "max_seq_length must be at least 2 ([CLS] and [SEP])");
        free_parts(&parts);
        goto done;
    }
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        PyErr_NoMemory();
        free_parts(&parts);
        goto done;
    }
    self->threads = threads > 0 ? threads : cx_threads_available();
    /* One BLAS thread: the bridge splits every fp32 product across libtorch's pool itself and
     * makes one BLAS call per thread (cx_bert.cpp); BLAS threads under that oversubscribe the
     * cores (measured: 13.8 instead of 47 texts/s). The same for every Embedder, so setting it
     * process-wide is right. Returns 0 when this libtorch uses another BLAS: nothing to set. */
    cx_threads_set_blas(1);
    self->model = parts.model;
    self->tokenizer = parts.tokenizer;
    self->bert = parts.bert;
    self->max_seq_length = max_seq_length > 0 ? max_seq_length : config->max_seq_length;
    if (memory != Py_None) {
        /* The budget is predicted for this model; a limit too small for it is refused now. */
        cx_memory *manager = cx_memory_manager_get(cx_state_of(self), memory);
        cx_memory_attach_model(manager, config, device == CX_DEVICE_CUDA);
        cx_error err;
        cx_error_clear(&err);
        cx_status status = cx_memory_check_model(manager, config, -1, &err);
        if (status != CX_OK) {
            cx_raise(cx_state_of(self), status, &err);
            goto done; /* self->model is set: Embedder_dealloc frees the parts */
        }
        self->memory = Py_NewRef(memory);
    }
    result = 0;
done:
    Py_XDECREF(path);
    return result;
}

static int Embedder_traverse(Embedder *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->memory);
    return 0;
}

static int Embedder_clear(Embedder *self)
{
    Py_CLEAR(self->memory);
    return 0;
}

static void Embedder_dealloc(Embedder *self)
{
    PyObject_GC_UnTrack(self);
    Embedder_clear(self);
    cx_encode_scratch_release(&self->scratch);
    cx_bert_free(self->bert); /* before the model: it wraps the model's weights */
    cx_tokenizer_free(self->tokenizer);
    cx_model_free(self->model);
    if (self->lock != NULL)
        PyThread_free_lock(self->lock);
    cx_object_free((PyObject *)self);
}

static int require_ready(Embedder *self)
{
    if (self->model != NULL)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "Embedder was not initialised");
    return -1;
}

/* ---- encode ------------------------------------------------------------------------------ */

typedef struct {
    PyThreadState *thread_state; /* saved while the engine runs without the GIL */
    PyObject *progress;          /* borrowed callable or NULL */
    cx_memory *memory;           /* borrowed or NULL */
} hook_context;

/* Between batches, with the GIL re-taken: gc when the MemoryManager asks, Ctrl-C, progress. */
static cx_status between_batches(void *context, int64_t done, int64_t total, int actions,
                                 cx_error *err)
{
    hook_context *hook = context;
    cx_status status = CX_OK;
    PyEval_RestoreThread(hook->thread_state);
    if ((actions & CX_MEMORY_ACTION_GC) != 0 && hook->memory != NULL) {
        PyGC_Collect();
        cx_memory_count_gc(hook->memory);
    }
    if (PyErr_CheckSignals() < 0) {
        status = cx_error_set(err, CX_ERR_INTERRUPTED, "interrupted");
    } else if (hook->progress != NULL) {
        PyObject *result = PyObject_CallFunction(hook->progress, "LL", (long long)done,
                                                 (long long)total);
        if (result == NULL)
            status = cx_error_set(err, CX_ERR_INTERRUPTED, "progress callback raised");
        Py_XDECREF(result);
    }
    hook->thread_state = PyEval_SaveThread();
    return status;
}

/* Fills texts[i] from items[i] (str only); keepalive collects re-encoded bytes objects. */
static int collect_texts(PyObject **items, Py_ssize_t count, cx_text *texts, PyObject *keepalive)
{
    for (Py_ssize_t i = 0; i < count; ++i) {
        if (!PyUnicode_Check(items[i])) {
            PyErr_Format(PyExc_TypeError, "texts[%zd] must be str, not %.100s", i,
                         Py_TYPE(items[i])->tp_name);
            return -1;
        }
        const char *data;
        Py_ssize_t length;
        PyObject *bytes;
        if (cx_utf8_of(items[i], &data, &length, &bytes) < 0)
            return -1;
        if (bytes != NULL) {
            int appended = PyList_Append(keepalive, bytes);
            Py_DECREF(bytes);
            if (appended < 0)
                return -1;
        }
        texts[i].data = data;
        texts[i].length = (size_t)length;
    }
    return 0;
}

/* A new tuple of the items of `sequence` (the same object when it is a tuple); NULL with
 * TypeError when it is not iterable. */
static PyObject *texts_tuple(PyObject *sequence)
{
    PyObject *items = PySequence_Tuple(sequence);
    if (items == NULL && PyErr_ExceptionMatches(PyExc_TypeError) &&
        !PyObject_HasAttrString(sequence, "__iter__")) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "texts must be a sequence of str, not %.100s",
                     Py_TYPE(sequence)->tp_name);
    }
    return items;
}

static int check_output(Py_buffer *view, Py_ssize_t count, int64_t dim)
{
    if (view->itemsize != (Py_ssize_t)sizeof(float) ||
        (view->format != NULL && strcmp(view->format, "f") != 0 &&
         strcmp(view->format, "<f") != 0 && strcmp(view->format, "=f") != 0)) {
        PyErr_SetString(PyExc_TypeError, "out must be a float32 buffer");
        return -1;
    }
    if (view->len != count * dim * (Py_ssize_t)sizeof(float)) {
        PyErr_Format(PyExc_ValueError, "out must hold %zd x %lld float32 values, not %zd bytes",
                     count, (long long)dim, view->len);
        return -1;
    }
    return 0;
}

/* The GIL-free part of an encode: this Embedder's thread count, then the batch loop.
 * libtorch's pool size is set per call because it is the calling thread's setting (OpenMP),
 * which the last Embedder to run in this thread (or any other code) may have changed. */
static cx_status run_encode(Embedder *self, const cx_encode_request *request, cx_error *err)
{
    cx_status status = cx_backend_set_threads(self->threads, err);
    if (status != CX_OK)
        return status;
    return cx_encode_run(self->tokenizer, self->bert, request, &self->scratch, err);
}

static PyObject *Embedder_encode_into(Embedder *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"texts", "out", "batch_tokens", "progress", NULL};
    PyObject *sequence, *out, *progress = Py_None;
    Py_ssize_t batch_tokens = 0;
    if (require_ready(self) < 0 ||
        !PyArg_ParseTupleAndKeywords(args, kwargs, "OO|$nO", keywords, &sequence, &out,
                                     &batch_tokens, &progress))
        return NULL;
    if (batch_tokens < 0) {
        PyErr_SetString(PyExc_ValueError, "batch_tokens must not be negative");
        return NULL;
    }
    if (progress != Py_None && !PyCallable_Check(progress)) {
        PyErr_SetString(PyExc_TypeError, "progress must be callable or None");
        return NULL;
    }

    PyObject *result = NULL, *keepalive = NULL;
    cx_text *texts = NULL;
    Py_buffer view = {0};
    int have_view = 0, locked = 0;
    /* A tuple of its own, not the caller's list: the str objects whose UTF-8 the engine reads
     * must live until the end, whatever another thread or the progress callback does to the
     * list while the GIL is released. */
    PyObject *items = texts_tuple(sequence);
    if (items == NULL)
        return NULL;
    const Py_ssize_t count = PyTuple_GET_SIZE(items);
    const int64_t dim = cx_bert_config_of(self->bert)->hidden_size;

    if (PyObject_GetBuffer(out, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        goto done;
    have_view = 1;
    if (check_output(&view, count, dim) < 0)
        goto done;
    keepalive = PyList_New(0);
    texts = PyMem_Calloc((size_t)(count > 0 ? count : 1), sizeof *texts);
    if (keepalive == NULL || texts == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (collect_texts(PySequence_Fast_ITEMS(items), count, texts, keepalive) < 0)
        goto done;

    cx_memory *memory =
        self->memory != NULL ? cx_memory_manager_get(cx_state_of(self), self->memory) : NULL;
    hook_context hook = {NULL, progress != Py_None ? progress : NULL, memory};
    cx_encode_request request = {
        .texts = texts,
        .count = count,
        .max_seq_length = self->max_seq_length,
        .batch_tokens = batch_tokens,
        .memory = memory,
        .after_batch = between_batches,
        .hook_context = &hook,
        .out = view.buf,
    };
    cx_error err;
    cx_error_clear(&err);
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
    locked = 1;
    hook.thread_state = PyEval_SaveThread();
    cx_status status = run_encode(self, &request, &err);
    PyEval_RestoreThread(hook.thread_state);
    if (status != CX_OK) {
        cx_raise(cx_state_of(self), status, &err);
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    if (locked)
        PyThread_release_lock(self->lock);
    PyMem_Free(texts);
    Py_XDECREF(keepalive);
    if (have_view)
        PyBuffer_Release(&view);
    Py_DECREF(items);
    return result;
}

/* ---- tokenizer access -------------------------------------------------------------------- */

/* The UTF-8 of a str argument of the tokenizer methods (see cx_utf8_of); -1 with an
 * exception set when the Embedder is not ready or `text` is no str. */
static int text_argument(Embedder *self, PyObject *text, const char **data, Py_ssize_t *length,
                         PyObject **keepalive)
{
    if (require_ready(self) < 0)
        return -1;
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "text must be str, not %.100s", Py_TYPE(text)->tp_name);
        return -1;
    }
    return cx_utf8_of(text, data, length, keepalive);
}

static PyObject *Embedder_tokenize(Embedder *self, PyObject *text)
{
    const char *data;
    Py_ssize_t length;
    PyObject *keepalive;
    if (text_argument(self, text, &data, &length, &keepalive) < 0)
        return NULL;
    int32_t *ids = PyMem_Malloc((size_t)self->max_seq_length * sizeof *ids);
    if (ids == NULL) {
        Py_XDECREF(keepalive);
        return PyErr_NoMemory();
    }
    cx_error err;
    cx_error_clear(&err);
    int64_t count;
    Py_BEGIN_ALLOW_THREADS
    count = cx_tokenizer_encode(self->tokenizer, data, (size_t)length, ids, self->max_seq_length,
                                &err);
    Py_END_ALLOW_THREADS
    PyObject *result = count < 0 ? cx_raise(cx_state_of(self), (cx_status)count, &err)
                                 : cx_ids_to_list(ids, count);
    PyMem_Free(ids);
    Py_XDECREF(keepalive);
    return result;
}

static PyObject *Embedder_count_tokens(Embedder *self, PyObject *text)
{
    const char *data;
    Py_ssize_t length;
    PyObject *keepalive;
    if (text_argument(self, text, &data, &length, &keepalive) < 0)
        return NULL;
    cx_error err;
    cx_error_clear(&err);
    int64_t count;
    Py_BEGIN_ALLOW_THREADS
    count = cx_tokenizer_count(self->tokenizer, data, (size_t)length, &err);
    Py_END_ALLOW_THREADS
    Py_XDECREF(keepalive);
    return count < 0 ? cx_raise(cx_state_of(self), (cx_status)count, &err)
                     : PyLong_FromLongLong(count);
}

static PyObject *Embedder_id_to_token(Embedder *self, PyObject *arg)
{
    if (require_ready(self) < 0)
        return NULL;
    long id = PyLong_AsLong(arg);
    if (id == -1 && PyErr_Occurred())
        return NULL;
    const char *token =
        id >= 0 && id <= INT32_MAX ? cx_tokenizer_id_to_token(self->tokenizer, (int32_t)id) : NULL;
    if (token == NULL)
        return PyErr_Format(PyExc_IndexError, "token id %ld is outside the vocabulary", id);
    return PyUnicode_FromString(token);
}

static PyObject *Embedder_release_scratch(Embedder *self, PyObject *unused)
{
    if (require_ready(self) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    cx_bert_release_scratch(self->bert);
    cx_encode_scratch_release(&self->scratch);
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* ---- properties -------------------------------------------------------------------------- */

static PyObject *Embedder_get_dim(Embedder *self, void *closure)
{
    if (require_ready(self) < 0)
        return NULL;
    return PyLong_FromLongLong(cx_bert_config_of(self->bert)->hidden_size);
}

static PyObject *Embedder_get_max_seq_length(Embedder *self, void *closure)
{
    if (require_ready(self) < 0)
        return NULL;
    return PyLong_FromLongLong(self->max_seq_length);
}

static PyObject *Embedder_get_threads(Embedder *self, void *closure)
{
    return PyLong_FromLong(self->threads);
}

static PyObject *Embedder_get_device(Embedder *self, void *closure)
{
    if (require_ready(self) < 0)
        return NULL;
    return PyUnicode_FromString(cx_bert_device(self->bert) == CX_DEVICE_CUDA ? "cuda" : "cpu");
}

static PyObject *Embedder_get_precision(Embedder *self, void *closure)
{
    if (require_ready(self) < 0)
        return NULL;
    return PyUnicode_FromString(cx_bert_precision(self->bert) == CX_PRECISION_BF16 ? "bf16"
                                                                                   : "fp32");
}


static PyObject *Embedder_get_scratch_bytes(Embedder *self, void *closure)
{
    if (require_ready(self) < 0)
        return NULL;
    return PyLong_FromLongLong(cx_bert_scratch_held(self->bert));
}

static PyObject *Embedder_get_config(Embedder *self, void *closure)
{
    if (require_ready(self) < 0)
        return NULL;
    const cx_bert_config *c = cx_model_config(self->model);
    return Py_BuildValue("{s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:d,s:L,s:O}", "vocab_size", c->vocab_size,
                         "hidden_size", c->hidden_size, "num_layers", c->num_layers, "num_heads",
                         c->num_heads, "intermediate_size", c->intermediate_size,
                         "max_position_embeddings", c->max_position_embeddings, "type_vocab_size",
                         c->type_vocab_size, "layer_norm_eps", c->layer_norm_eps,
                         "max_seq_length", c->max_seq_length, "do_lower_case",
                         c->do_lower_case ? Py_True : Py_False);
}

static PyObject *Embedder_get_memory(Embedder *self, void *closure)
{
    return Py_NewRef(self->memory != NULL ? self->memory : Py_None);
}

static PyMethodDef Embedder_methods[] = {
    {"encode_into", (PyCFunction)(void (*)(void))Embedder_encode_into,
     METH_VARARGS | METH_KEYWORDS,
     "encode_into(texts, out, *, batch_tokens=0, progress=None)\n\n"
     "Encodes a sequence of str into `out`, a C-contiguous float32 buffer of len(texts) x dim,\n"
     "row i for texts[i]. batch_tokens caps the padded tokens per batch (0: the MemoryManager's\n"
     "budget or the default). progress(done, total) is called after each batch. Ctrl-C between\n"
     "batches raises KeyboardInterrupt."},
    {"tokenize", (PyCFunction)Embedder_tokenize, METH_O,
     "tokenize(text) -> list[int]\n\nIds the model sees: [CLS] ... [SEP], at most "
     "max_seq_length."},
    {"count_tokens", (PyCFunction)Embedder_count_tokens, METH_O,
     "count_tokens(text) -> int\n\nIds of the whole text, [CLS] and [SEP] included, untruncated."},
    {"id_to_token", (PyCFunction)Embedder_id_to_token, METH_O,
     "id_to_token(id) -> str\n\nThe vocabulary entry of an id."},
    {"release_scratch", (PyCFunction)Embedder_release_scratch, METH_NOARGS,
     "release_scratch()\n\nFrees the reusable batch buffers; the next encode regrows them."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Embedder_getset[] = {
    {"dim", (getter)Embedder_get_dim, NULL, "Width of the sentence vectors.", NULL},
    {"max_seq_length", (getter)Embedder_get_max_seq_length, NULL,
     "Tokens kept per text, [CLS] and [SEP] included.", NULL},
    {"threads", (getter)Embedder_get_threads, NULL,
     "Threads of libtorch's intra-op pool during this Embedder's encodes.", NULL},
    {"device", (getter)Embedder_get_device, NULL, "'cpu' or 'cuda'.", NULL},
    {"precision", (getter)Embedder_get_precision, NULL, "'fp32' or 'bf16'.", NULL},
    {"config", (getter)Embedder_get_config, NULL, "The model's configuration as a dict.", NULL},
    {"scratch_bytes", (getter)Embedder_get_scratch_bytes, NULL,
     "Bytes held by the encoder's reusable scratch tensors.", NULL},
    {"memory", (getter)Embedder_get_memory, NULL, "The MemoryManager, or None.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Embedder_slots[] = {
    {Py_tp_doc, "Embedder(model_dir, *, precision, threads=0, max_seq_length=0, memory=None,\n"
                "         device='cpu')\n\n"
                "A BERT-family sentence encoder: WordPiece tokenizer, forward pass over libtorch,\n"
                "mean pooling and L2 normalisation. threads=0 uses every core this process may\n"
                "use; max_seq_length=0 keeps the model's. precision: 'fp32' or 'bf16', as\n"
                "coarch.embedder.choose_precision resolves it."},
    {Py_tp_init, Embedder_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, Embedder_dealloc},
    {Py_tp_traverse, Embedder_traverse},
    {Py_tp_clear, Embedder_clear},
    {Py_tp_methods, Embedder_methods},
    {Py_tp_getset, Embedder_getset},
    {0, NULL},
};

static PyType_Spec Embedder_spec = {
    .name = "coarch._core.Embedder",
    .basicsize = sizeof(Embedder),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Embedder_slots,
};

int cx_embedder_type_setup(PyObject *module, cx_module_state *state)
{
    return cx_type_add(module, &Embedder_spec, &state->embedder_type);
}
