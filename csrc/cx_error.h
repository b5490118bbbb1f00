/* cx_error.h: status codes and the error message every engine call fills on failure.
 *
 * Engine functions return a cx_status (or NULL for constructors) and, on failure, write one
 * human-readable message of the form "<what> (<file or tensor>): <why>" into a caller-owned
 * cx_error. They never print. The Python bridge maps statuses to exceptions in one place
 * (module.c: cx_raise). */
#ifndef COARCH_CX_ERROR_H
#define COARCH_CX_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cx_status {
    CX_OK = 0,
    CX_ERR_NOMEM = -1,       /* an allocation failed (maps to MemoryError) */
    CX_ERR_IO = -2,          /* a file could not be opened, read or mapped (OSError) */
    CX_ERR_FORMAT = -3,      /* a file's content is malformed: JSON, safetensors header (ModelError) */
    CX_ERR_MODEL = -4,       /* a well-formed model that we cannot use: missing tensor, bad shape */
    CX_ERR_BACKEND = -5,     /* libtorch raised: message carries its text (CoreError) */
    CX_ERR_INTERRUPTED = -6, /* the caller asked to stop between batches (KeyboardInterrupt) */
    CX_ERR_ARGUMENT = -7,    /* a caller passed an invalid value (ValueError) */
    CX_ERR_MEMORY_LIMIT = -8 /* work cannot fit under the memory limit, even alone (MemoryError) */
} cx_status;

#define CX_ERROR_MESSAGE_SIZE 512

typedef struct cx_error {
    char message[CX_ERROR_MESSAGE_SIZE]; /* NUL-terminated; empty when no error was set */
} cx_error;

/* Formats the message (printf-style, truncated to fit) and returns `status`, so that a failing
 * path reads `return cx_error_set(err, CX_ERR_IO, "...", ...);`. `err` may be NULL. */
cx_status cx_error_set(cx_error *err, cx_status status, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Empties the message. */
void cx_error_clear(cx_error *err);

#ifdef __cplusplus
}
#endif

#endif
