/* cx_error.c: formatting of engine error messages. */
#include "cx_error.h"

#include <stdarg.h>
#include <stdio.h>

cx_status cx_error_set(cx_error *err, cx_status status, const char *format, ...)
{
    if (err == NULL)
        return status;
    va_list args;
    va_start(args, format);
    vsnprintf(err->message, sizeof err->message, format, args);
    va_end(args);
    return status;
}

void cx_error_clear(cx_error *err)
{
    if (err != NULL)
        err->message[0] = '\0';
}
