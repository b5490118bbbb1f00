/* cx_json.h: a small, strict JSON reader for config files and safetensors headers.
 *
 * The whole document is parsed into one arena owned by the returned cx_json_document; every
 * cx_json_value pointer borrows from it. Depth is bounded and every length is checked, so any
 * input, however malformed, yields either a document or an error. */
#ifndef COARCH_CX_JSON_H
#define COARCH_CX_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "cx_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cx_json_type {
    CX_JSON_NULL,
    CX_JSON_BOOL,
    CX_JSON_NUMBER,
    CX_JSON_STRING,
    CX_JSON_ARRAY,
    CX_JSON_OBJECT
} cx_json_type;

typedef struct cx_json_value cx_json_value;       /* opaque, borrowed from its document */
typedef struct cx_json_document cx_json_document; /* owns every value */

/* Parses `length` bytes of UTF-8 `text` (not NUL-terminated). `source` names the input in error
 * messages ("config.json"). Returns NULL and fills `err` (CX_ERR_FORMAT for bad JSON with the
 * byte offset, CX_ERR_NOMEM) on failure. */
cx_json_document *cx_json_parse(const char *text, size_t length, const char *source, cx_error *err);
void cx_json_free(cx_json_document *document); /* NULL is fine */

const cx_json_value *cx_json_root(const cx_json_document *document);
cx_json_type cx_json_type_of(const cx_json_value *value);

/* Object member by key, or NULL when `object` is not an object or has no such key. */
const cx_json_value *cx_json_get(const cx_json_value *object, const char *key);
/* Members of an object in document order: count, then key and value of member i. */
size_t cx_json_object_size(const cx_json_value *object);
const char *cx_json_object_key(const cx_json_value *object, size_t index);
const cx_json_value *cx_json_object_value(const cx_json_value *object, size_t index);
/* Arrays: count, then item i (NULL when out of range or not an array). */
size_t cx_json_array_size(const cx_json_value *array);
const cx_json_value *cx_json_array_item(const cx_json_value *array, size_t index);

/* Scalars. Each returns 1 and writes *out when `value` has that type (an integer also requires a
 * number with no fraction that fits in int64), else 0 and leaves *out alone. Strings are
 * NUL-terminated UTF-8 with escapes decoded, borrowed from the document. */
int cx_json_as_bool(const cx_json_value *value, int *out);
int cx_json_as_double(const cx_json_value *value, double *out);
int cx_json_as_int64(const cx_json_value *value, int64_t *out);
int cx_json_as_string(const cx_json_value *value, const char **out);

#ifdef __cplusplus
}
#endif

#endif
