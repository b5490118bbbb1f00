/* tokenizer_type.c: coarch._core.Tokenizer, the Python face of the cx_tokenizer engine.
 *
 * Converts arguments, runs the engine with the GIL released for long texts and builds the id
 * lists. The engine object is immutable, so one Tokenizer serves any number of threads. */
#include "core.h"

#include "cx_tokenizer.h"

/* Texts shorter than this are tokenized with the GIL held: they take microseconds, and giving
 * the GIL away costs a wait of up to the switch interval when other threads want it. */
#define RELEASE_GIL_BYTES 8192

/* Up to this many ids, encode allocates the worst case (one id per input byte, plus [CLS] and
 * [SEP]) and reads the text once; beyond it, it counts first and allocates exactly. */
#define SINGLE_PASS_IDS 65536

typedef struct {
    PyObject_HEAD
    cx_tokenizer *tokenizer; /* owned; never NULL once tp_new returns the object */
    int lowercase;
} Tokenizer;

static PyObject *Tokenizer_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"vocab_path", "lowercase", NULL};
    PyObject *path = NULL;
    int lowercase = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&|p:Tokenizer", keywords,
                                     PyUnicode_FSConverter, &path, &lowercase))
        return NULL;
    cx_error err;
    cx_error_clear(&err);
    cx_status status;
    cx_tokenizer *tokenizer;
    Py_BEGIN_ALLOW_THREADS
    tokenizer = cx_tokenizer_open(PyBytes_AS_STRING(path), lowercase, &status, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (tokenizer == NULL)
        return cx_raise(cx_state_of_type(type), status, &err);
    Tokenizer *self = (Tokenizer *)type->tp_alloc(type, 0);
    if (self == NULL) {
        cx_tokenizer_free(tokenizer);
        return NULL;
    }
    self->tokenizer = tokenizer;
    self->lowercase = lowercase;
    return (PyObject *)self;
}

static void Tokenizer_dealloc(Tokenizer *self)
{
    cx_tokenizer_free(self->tokenizer);
    cx_object_free((PyObject *)self);
}

/* Gives the GIL away for work on a text of `length` bytes when the text is long enough for it
 * to be worth it (RELEASE_GIL_BYTES); NULL when the GIL is kept. retake_gil(the result) ends
 * the stretch; in between, touch engine data only. */
static PyThreadState *release_gil_for(Py_ssize_t length)
{
    return length < RELEASE_GIL_BYTES ? NULL : PyEval_SaveThread();
}

static void retake_gil(PyThreadState *saved)
{
    if (saved != NULL)
        PyEval_RestoreThread(saved);
}

/* The UTF-8 of `text`, the str argument of `method`: TypeError for another type; *keepalive
 * as cx_utf8_of sets it (the caller releases it once done with *data). */
static int str_argument(PyObject *text, const char *method, const char **data,
                        Py_ssize_t *length, PyObject **keepalive)
{
    *keepalive = NULL;
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "%s() argument must be str, not %.100s", method,
                     Py_TYPE(text)->tp_name);
        return -1;
    }
    return cx_utf8_of(text, data, length, keepalive);
}

/* max_tokens: None (no truncation: INT64_MAX) or an int, which the engine judges. */
static int parse_max_tokens(PyObject *value, int64_t *max_tokens)
{
    *max_tokens = INT64_MAX;
    if (value == Py_None)
        return 0;
    if (PyBool_Check(value) || !PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "max_tokens must be an int or None, not %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long parsed = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (parsed == -1 && PyErr_Occurred())
        return -1;
    *max_tokens = overflow > 0 ? INT64_MAX : overflow < 0 ? INT64_MIN : (int64_t)parsed;
    return 0;
}

/* The engine work of encode: sizes the id buffer and fills it. Touches no Python object, so it
 * runs with or without the GIL. On success *ids is a PyMem_Raw buffer the caller frees. */
static int64_t encode_ids(const cx_tokenizer *tokenizer, const char *data, size_t length,
                          int64_t max_tokens, int32_t **ids, cx_error *err)
{
    *ids = NULL;
    if (max_tokens < 2) {
        int32_t none[2]; /* the engine refuses the value and says why */
        return cx_tokenizer_encode(tokenizer, data, length, none, max_tokens, err);
    }
    /* Every id consumes at least one input byte (cx_tokenizer.h), so length + 2 ids suffice. */
    int64_t capacity = length < (size_t)INT64_MAX - 2 ? (int64_t)length + 2 : INT64_MAX;
    if (max_tokens < capacity)
        capacity = max_tokens;
    if (capacity > SINGLE_PASS_IDS) {
        int64_t count = cx_tokenizer_count(tokenizer, data, length, err);
        if (count < 0)
            return count;
        if (count < capacity)
            capacity = count;
    }
    if ((uint64_t)capacity > PY_SSIZE_T_MAX / sizeof(int32_t))
        return cx_error_set(err, CX_ERR_NOMEM, "cannot encode: %lld ids do not fit in memory",
                            (long long)capacity);
    *ids = PyMem_RawMalloc((size_t)capacity * sizeof(int32_t));
    if (*ids == NULL)
        return cx_error_set(err, CX_ERR_NOMEM, "cannot encode: out of memory for %lld ids",
                            (long long)capacity);
    int64_t count = cx_tokenizer_encode(tokenizer, data, length, *ids, capacity, err);
    if (count < 0) {
        PyMem_RawFree(*ids);
        *ids = NULL;
    }
    return count;
}

static PyObject *encode_utf8(Tokenizer *self, const char *data, Py_ssize_t length,
                             int64_t max_tokens)
{
    cx_error err;
    cx_error_clear(&err);
    int32_t *ids = NULL;
    PyThreadState *saved = release_gil_for(length);
    int64_t count = encode_ids(self->tokenizer, data, (size_t)length, max_tokens, &ids, &err);
    retake_gil(saved);
    if (count < 0)
        return cx_raise(cx_state_of(self), (cx_status)count, &err);
    PyObject *list = cx_ids_to_list(ids, count);
    PyMem_RawFree(ids);
    return list;
}

static PyObject *Tokenizer_encode(Tokenizer *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"text", "max_tokens", NULL};
    PyObject *text, *max_object = Py_None, *keepalive = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "U|O:encode", keywords, &text, &max_object))
        return NULL;
    int64_t max_tokens;
    const char *data;
    Py_ssize_t length;
    if (parse_max_tokens(max_object, &max_tokens) < 0 ||
        cx_utf8_of(text, &data, &length, &keepalive) < 0)
        return NULL;
    PyObject *result = encode_utf8(self, data, length, max_tokens);
    Py_XDECREF(keepalive);
    return result;
}

static PyObject *Tokenizer_encode_bytes(Tokenizer *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"data", "max_tokens", NULL};
    Py_buffer buffer;
    PyObject *max_object = Py_None, *result = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*|O:encode_bytes", keywords, &buffer,
                                     &max_object))
        return NULL;
    int64_t max_tokens;
    if (parse_max_tokens(max_object, &max_tokens) < 0)
        goto done;
    result = encode_utf8(self, buffer.buf, buffer.len, max_tokens);
done:
    PyBuffer_Release(&buffer);
    return result;
}

static PyObject *Tokenizer_count(Tokenizer *self, PyObject *text)
{
    const char *data;
    Py_ssize_t length;
    PyObject *keepalive;
    if (str_argument(text, "count", &data, &length, &keepalive) < 0)
        return NULL;
    cx_error err;
    cx_error_clear(&err);
    PyThreadState *saved = release_gil_for(length);
    int64_t count = cx_tokenizer_count(self->tokenizer, data, (size_t)length, &err);
    retake_gil(saved);
    Py_XDECREF(keepalive);
    if (count < 0)
        return cx_raise(cx_state_of(self), (cx_status)count, &err);
    return PyLong_FromLongLong(count);
}

/* The engine work of count_lines: sizes the counts buffer and fills it. Touches no Python
 * object, so it runs with or without the GIL. On success *counts is a PyMem_Raw buffer of the
 * returned number of lines, which the caller frees. */
static int64_t count_lines(const cx_tokenizer *tokenizer, const char *data, size_t length,
                           int64_t **counts, cx_error *err)
{
    int64_t lines = cx_tokenizer_line_count(data, length);
    *counts = (uint64_t)lines <= PY_SSIZE_T_MAX / sizeof(int64_t)
                  ? PyMem_RawMalloc((size_t)lines * sizeof(int64_t))
                  : NULL;
    if (*counts == NULL)
        return cx_error_set(err, CX_ERR_NOMEM, "cannot count tokens: out of memory for %lld "
                            "lines", (long long)lines);
    int64_t done = cx_tokenizer_count_lines(tokenizer, data, length, *counts, lines, err);
    if (done < 0) {
        PyMem_RawFree(*counts);
        *counts = NULL;
    }
    return done;
}

static PyObject *counts_to_list(const int64_t *counts, int64_t lines)
{
    PyObject *list = PyList_New((Py_ssize_t)lines);
    if (list == NULL)
        return NULL;
    for (int64_t i = 0; i < lines; i++) {
        PyObject *count = PyLong_FromLongLong(counts[i]);
        if (count == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, count);
    }
    return list;
}

static PyObject *Tokenizer_count_lines(Tokenizer *self, PyObject *text)
{
    const char *data;
    Py_ssize_t length;
    PyObject *keepalive;
    if (str_argument(text, "count_lines", &data, &length, &keepalive) < 0)
        return NULL;
    cx_error err;
    cx_error_clear(&err);
    int64_t *counts = NULL;
    PyThreadState *saved = release_gil_for(length);
    int64_t lines = count_lines(self->tokenizer, data, (size_t)length, &counts, &err);
    retake_gil(saved);
    Py_XDECREF(keepalive);
    if (lines < 0)
        return cx_raise(cx_state_of(self), (cx_status)lines, &err);
    PyObject *list = counts_to_list(counts, lines);
    PyMem_RawFree(counts);
    return list;
}

static PyObject *Tokenizer_id_to_token(Tokenizer *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"token_id", NULL};
    long long id;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "L:id_to_token", keywords, &id))
        return NULL;
    const char *token = id >= 0 && id <= INT32_MAX
                            ? cx_tokenizer_id_to_token(self->tokenizer, (int32_t)id)
                            : NULL;
    if (token == NULL) {
        PyErr_Format(PyExc_IndexError, "token id %lld is out of range (vocabulary of %lld)", id,
                     (long long)cx_tokenizer_vocab_size(self->tokenizer));
        return NULL;
    }
    return PyUnicode_DecodeUTF8(token, (Py_ssize_t)strlen(token), "replace");
}

static PyObject *Tokenizer_repr(Tokenizer *self)
{
    return PyUnicode_FromFormat("<coarch._core.Tokenizer vocab_size=%lld lowercase=%s>",
                                (long long)cx_tokenizer_vocab_size(self->tokenizer),
                                self->lowercase ? "True" : "False");
}

static PyObject *Tokenizer_get_vocab_size(Tokenizer *self, void *closure)
{
    return PyLong_FromLongLong(cx_tokenizer_vocab_size(self->tokenizer));
}

static PyObject *Tokenizer_get_pad_id(Tokenizer *self, void *closure)
{
    return PyLong_FromLong(cx_tokenizer_pad_id(self->tokenizer));
}

static PyObject *Tokenizer_get_unk_id(Tokenizer *self, void *closure)
{
    return PyLong_FromLong(cx_tokenizer_unk_id(self->tokenizer));
}

static PyObject *Tokenizer_get_cls_id(Tokenizer *self, void *closure)
{
    return PyLong_FromLong(cx_tokenizer_cls_id(self->tokenizer));
}

static PyObject *Tokenizer_get_sep_id(Tokenizer *self, void *closure)
{
    return PyLong_FromLong(cx_tokenizer_sep_id(self->tokenizer));
}

static PyMethodDef Tokenizer_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))Tokenizer_encode, METH_VARARGS | METH_KEYWORDS,
     "encode(text, max_tokens=None) -> list[int]\n\nIds of [CLS] text [SEP]. With max_tokens, "
     "at most that many ids (>= 2): the first\nmax_tokens - 2 pieces, then [SEP]; reading "
     "stops there. Lone surrogates are dropped."},
    {"encode_bytes", (PyCFunction)(void (*)(void))Tokenizer_encode_bytes,
     METH_VARARGS | METH_KEYWORDS,
     "encode_bytes(data, max_tokens=None) -> list[int]\n\nLike encode, for UTF-8 bytes (any "
     "bytes-like object); invalid sequences are dropped,\nas in text decoded with "
     "errors='replace' and then cleaned."},
    {"count", (PyCFunction)Tokenizer_count, METH_O,
     "count(text) -> int\n\nlen(encode(text)) without building the list: [CLS] and [SEP] "
     "included, no truncation."},
    {"count_lines", (PyCFunction)Tokenizer_count_lines, METH_O,
     "count_lines(text) -> list[int]\n\n[count(line) for line in text.split('\\n')] in one "
     "call, the GIL released\nfor long texts."},
    {"id_to_token", (PyCFunction)(void (*)(void))Tokenizer_id_to_token,
     METH_VARARGS | METH_KEYWORDS,
     "id_to_token(token_id) -> str\n\nThe vocabulary entry of an id; IndexError when out of "
     "range."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Tokenizer_getset[] = {
    {"vocab_size", (getter)Tokenizer_get_vocab_size, NULL,
     "Lines of vocab.txt: ids run from 0 to vocab_size - 1.", NULL},
    {"pad_id", (getter)Tokenizer_get_pad_id, NULL, "Id of [PAD] (0 when absent).", NULL},
    {"unk_id", (getter)Tokenizer_get_unk_id, NULL, "Id of [UNK].", NULL},
    {"cls_id", (getter)Tokenizer_get_cls_id, NULL, "Id of [CLS], the first id of every text.",
     NULL},
    {"sep_id", (getter)Tokenizer_get_sep_id, NULL, "Id of [SEP], the last id of every text.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Tokenizer_slots[] = {
    {Py_tp_doc,
     "Tokenizer(vocab_path, lowercase=True)\n\n"
     "BERT WordPiece tokenizer over vocab.txt, id for id with Hugging Face tokenizers'\n"
     "BertNormalizer + BertPreTokenizer + WordPiece + [CLS]/[SEP]. lowercase=True also strips\n"
     "accents. OSError when the file cannot be read, ModelError when [UNK], [CLS] or [SEP]\n"
     "is missing. Immutable and safe to share between threads."},
    {Py_tp_new, Tokenizer_new},
    {Py_tp_dealloc, Tokenizer_dealloc},
    {Py_tp_repr, Tokenizer_repr},
    {Py_tp_methods, Tokenizer_methods},
    {Py_tp_getset, Tokenizer_getset},
    {0, NULL},
};

static PyType_Spec Tokenizer_spec = {
    .name = "coarch._core.Tokenizer",
    .basicsize = sizeof(Tokenizer),
#ifdef Py_TPFLAGS_IMMUTABLETYPE
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
#else
    .flags = Py_TPFLAGS_DEFAULT,
#endif
    .slots = Tokenizer_slots,
};

int cx_tokenizer_type_setup(PyObject *module, cx_module_state *state)
{
    return cx_type_add(module, &Tokenizer_spec, &state->tokenizer_type);
}
