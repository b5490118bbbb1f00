/* cx_utf8.h: UTF-8 for the engine's readers: the bytes of a code point, and the length and code
 * point of the valid, shortest-form sequence at a position. Header-only (static inline), so that
 * a hot loop keeps them inlined; plain C, no allocation, no errors to report. */
#ifndef COARCH_CX_UTF8_H
#define COARCH_CX_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Writes the 1 to 4 bytes of `code` (at most U+10FFFF, not a surrogate: the caller's promise) at
 * `out` and returns how many. */
static inline size_t cx_utf8_put(unsigned char *out, uint32_t code)
{
    if (code < 0x80) {
        out[0] = (unsigned char)code;
        return 1;
    }
    if (code < 0x800) {
        out[0] = (unsigned char)(0xC0 | (code >> 6));
        out[1] = (unsigned char)(0x80 | (code & 0x3F));
        return 2;
    }
    if (code < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (code >> 12));
        out[1] = (unsigned char)(0x80 | ((code >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (code & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (code >> 18));
    out[1] = (unsigned char)(0x80 | ((code >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((code >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (code & 0x3F));
    return 4;
}

/* Length of the valid, shortest-form UTF-8 sequence at s[0..available) (available > 0), with
 * its code point in *code; 0 when s[0] starts no such sequence (overlong, surrogate, above
 * U+10FFFF, truncated, stray continuation byte), *code untouched. */
static inline size_t cx_utf8_next(const unsigned char *s, size_t available, uint32_t *code)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        *code = c;
        return 1;
    }
    if (c < 0xC2 || c > 0xF4)
        return 0; /* a continuation byte, an overlong 2-byte lead, or above U+10FFFF */
    size_t length = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    /* The second byte's bounds refuse overlong forms (E0, F0), surrogates (ED) and code points
     * above U+10FFFF (F4). */
    unsigned char low = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
    unsigned char high = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
    if (available < length || s[1] < low || s[1] > high)
        return 0;
    uint32_t value = c & (0x7Fu >> length); /* the lead byte's payload bits */
    for (size_t i = 1; i < length; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        value = (value << 6) | (s[i] & 0x3Fu);
    }
    *code = value;
    return length;
}

#endif
