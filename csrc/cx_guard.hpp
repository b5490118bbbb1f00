/* cx_guard.hpp: the C boundary of the C++ files: runs a body and turns every exception it
 * throws into a cx_status with its message, so that nothing throws into C. C++ only. */
#ifndef COARCH_CX_GUARD_HPP
#define COARCH_CX_GUARD_HPP

#include <c10/util/Exception.h>

#include <exception>
#include <new>

#include "cx_error.h"

namespace cx {

/* Runs `body` (returning a cx_status): c10::Error and std::exception become CX_ERR_BACKEND with
 * "<what>: <libtorch's message>", std::bad_alloc CX_ERR_NOMEM, anything else CX_ERR_BACKEND. */
template <typename Body>
cx_status guarded(cx_error *err, const char *what, Body &&body)
{
    try {
        return body();
    } catch (const c10::Error &e) {
        return cx_error_set(err, CX_ERR_BACKEND, "%s: %s", what, e.what_without_backtrace());
    } catch (const std::bad_alloc &) {
        return cx_error_set(err, CX_ERR_NOMEM, "%s: out of memory", what);
    } catch (const std::exception &e) {
        return cx_error_set(err, CX_ERR_BACKEND, "%s: %s", what, e.what());
    } catch (...) {
        return cx_error_set(err, CX_ERR_BACKEND, "%s: unknown C++ exception", what);
    }
}

}  // namespace cx

#endif
