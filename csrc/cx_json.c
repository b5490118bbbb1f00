/* cx_json.c: a strict RFC 8259 JSON reader into one arena (see cx_json.h). */
#include "cx_json.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cx_utf8.h"

#define JSON_MAX_DEPTH 64          /* nesting of arrays and objects */
#define JSON_MAX_NUMBER_LENGTH 256 /* characters of one number literal */
#define ARENA_BLOCK_SIZE 65536

struct cx_json_member {
    const char *key;            /* NUL-terminated, decoded; in the arena */
    size_t key_length;          /* bytes before the NUL */
    size_t offset;              /* byte offset of the key in the text, for duplicate errors */
    const cx_json_value *value; /* in the arena */
};
typedef struct cx_json_member cx_json_member;

struct cx_json_value {
    cx_json_type type;
    union {
        int boolean;
        struct {
            double value;
            int64_t integer; /* valid when is_integer */
            int is_integer;  /* no fraction and fits in int64 */
        } number;
        struct {
            const char *data; /* NUL-terminated, decoded; in the arena */
            size_t length;
        } string;
        struct {
            const cx_json_value **items; /* [count], in the arena */
            size_t count;
        } array;
        struct {
            const cx_json_member *members;  /* [count] in document order, in the arena */
            const cx_json_member **sorted;  /* [count] sorted by key, for lookup */
            size_t count;
        } object;
    } as;
};

/* Bump allocator: a chain of blocks, freed all at once with the document. */
typedef struct arena_block {
    struct arena_block *next;
    size_t used, size;
    _Alignas(max_align_t) unsigned char data[];
} arena_block;

struct cx_json_document {
    arena_block *blocks;       /* owned chain, newest first */
    const cx_json_value *root; /* in the arena */
};

/* A stack shared by all nesting levels (malloc'ed, freed after parsing): the children of the
 * open containers, moved into the arena when each container closes. */
typedef struct scratch {
    void *data; /* owned; [capacity] elements */
    size_t count, capacity, element_size;
} scratch;

typedef struct parser {
    const unsigned char *text; /* borrowed input */
    size_t length, pos;
    const char *source; /* borrowed name for messages */
    cx_error *err;
    cx_status status; /* first failure; CX_OK while parsing */
    cx_json_document *document;
    scratch items;   /* of const cx_json_value *: the items of the open arrays */
    scratch members; /* of cx_json_member: the members of the open objects */
} parser;

static void *arena_alloc(cx_json_document *document, size_t size)
{
    const size_t align = _Alignof(max_align_t);
    size = (size + align - 1) & ~(align - 1);
    if (size == 0)
        size = align;
    arena_block *block = document->blocks;
    if (block == NULL || block->size - block->used < size) {
        size_t block_size = size > ARENA_BLOCK_SIZE ? size : ARENA_BLOCK_SIZE;
        block = malloc(sizeof *block + block_size);
        if (block == NULL)
            return NULL;
        block->next = document->blocks;
        block->used = 0;
        block->size = block_size;
        document->blocks = block;
    }
    void *out = block->data + block->used;
    block->used += size;
    return out;
}

static void *fail(parser *p, const char *why)
{
    if (p->status == CX_OK)
        p->status = cx_error_set(p->err, CX_ERR_FORMAT, "invalid JSON (%s): %s at byte %zu",
                                 p->source, why, p->pos);
    return NULL;
}

static void *fail_nomem(parser *p)
{
    if (p->status == CX_OK)
        p->status = cx_error_set(p->err, CX_ERR_NOMEM, "out of memory (%s): while parsing JSON",
                                 p->source);
    return NULL;
}

static cx_json_value *new_value(parser *p, cx_json_type type)
{
    cx_json_value *value = arena_alloc(p->document, sizeof *value);
    if (value == NULL)
        return fail_nomem(p);
    memset(value, 0, sizeof *value);
    value->type = type;
    return value;
}

static void skip_whitespace(parser *p)
{
    while (p->pos < p->length) {
        unsigned char c = p->text[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

/* Pushes a copy of the element_size bytes at `element`; 0 (failed: out of memory) or 1. */
static int scratch_push(parser *p, scratch *stack, const void *element)
{
    if (stack->count == stack->capacity) {
        size_t capacity = stack->capacity ? 2 * stack->capacity : 16;
        void *grown = stack->capacity > SIZE_MAX / 2 / stack->element_size
                          ? NULL
                          : realloc(stack->data, capacity * stack->element_size);
        if (grown == NULL) {
            fail_nomem(p);
            return 0;
        }
        stack->data = grown;
        stack->capacity = capacity;
    }
    memcpy((unsigned char *)stack->data + stack->count * stack->element_size, element,
           stack->element_size);
    stack->count++;
    return 1;
}

/* Pops the elements above `base` into a copy in the arena; NULL (failed) when out of memory. */
static void *scratch_pop(parser *p, scratch *stack, size_t base)
{
    size_t bytes = (stack->count - base) * stack->element_size;
    void *copy = arena_alloc(p->document, bytes);
    if (copy == NULL)
        return fail_nomem(p);
    if (bytes)
        memcpy(copy, (unsigned char *)stack->data + base * stack->element_size, bytes);
    stack->count = base;
    return copy;
}

static int hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads the 4 hex digits of a \u escape at p->pos; returns the code unit or -1. */
static long read_hex4(parser *p)
{
    if (p->length - p->pos < 4)
        return -1;
    long unit = 0;
    for (int i = 0; i < 4; i++) {
        int digit = hex_digit(p->text[p->pos + i]);
        if (digit < 0)
            return -1;
        unit = unit * 16 + digit;
    }
    p->pos += 4;
    return unit;
}

/* Parses a string whose opening quote is at p->pos; on success *out and *out_length hold the
 * decoded NUL-terminated bytes in the arena. Decoded text is never longer than its source, so the
 * source length bounds the allocation. */
static int parse_string(parser *p, const char **out, size_t *out_length)
{
    size_t start = ++p->pos; /* after the opening quote */
    size_t end = start;
    while (end < p->length && p->text[end] != '"')
        end += (p->text[end] == '\\') ? 2 : 1;
    if (end >= p->length) {
        p->pos = p->length;
        fail(p, "unterminated string");
        return 0;
    }
    unsigned char *decoded = arena_alloc(p->document, end - start + 1);
    if (decoded == NULL) {
        fail_nomem(p);
        return 0;
    }
    size_t written = 0;
    while (p->pos < end) {
        unsigned char c = p->text[p->pos];
        if (c < 0x20) {
            fail(p, "unescaped control character in string");
            return 0;
        }
        if (c != '\\') {
            uint32_t code;
            size_t n = cx_utf8_next(p->text + p->pos, end - p->pos, &code);
            if (n == 0) {
                fail(p, "invalid UTF-8 in string");
                return 0;
            }
            memcpy(decoded + written, p->text + p->pos, n);
            written += n;
            p->pos += n;
            continue;
        }
        size_t escape_at = p->pos;
        p->pos++; /* the escape letter; the scan above guarantees it is before `end` */
        unsigned char letter = p->text[p->pos++];
        unsigned char simple = 0;
        switch (letter) {
        case '"': simple = '"'; break;
        case '\\': simple = '\\'; break;
        case '/': simple = '/'; break;
        case 'b': simple = '\b'; break;
        case 'f': simple = '\f'; break;
        case 'n': simple = '\n'; break;
        case 'r': simple = '\r'; break;
        case 't': simple = '\t'; break;
        case 'u': break;
        default:
            p->pos = escape_at;
            fail(p, "invalid escape in string");
            return 0;
        }
        if (simple) {
            decoded[written++] = simple;
            continue;
        }
        long unit = read_hex4(p);
        if (unit < 0 || p->pos > end) {
            p->pos = escape_at;
            fail(p, "invalid \\u escape in string");
            return 0;
        }
        uint32_t code = (uint32_t)unit;
        if (unit >= 0xDC00 && unit <= 0xDFFF) {
            p->pos = escape_at;
            fail(p, "unpaired low surrogate in \\u escape");
            return 0;
        }
        if (unit >= 0xD800 && unit <= 0xDBFF) {
            long low = -1;
            if (end - p->pos >= 6 && p->text[p->pos] == '\\' && p->text[p->pos + 1] == 'u') {
                p->pos += 2;
                low = read_hex4(p);
            }
            if (low < 0xDC00 || low > 0xDFFF) {
                p->pos = escape_at;
                fail(p, "unpaired high surrogate in \\u escape");
                return 0;
            }
            code = 0x10000 + (((uint32_t)unit - 0xD800) << 10) + ((uint32_t)low - 0xDC00);
        }
        if (code == 0) {
            /* Strings are handed out NUL-terminated; an embedded NUL would silently cut them. */
            p->pos = escape_at;
            fail(p, "escaped NUL (\\u0000) in string is not supported");
            return 0;
        }
        written += cx_utf8_put(decoded + written, code);
    }
    decoded[written] = '\0';
    p->pos = end + 1; /* past the closing quote */
    *out = (const char *)decoded;
    *out_length = written;
    return 1;
}

/* The index after the decimal digits that start at t[i] (i itself when none does). */
static size_t skip_digits(const unsigned char *t, size_t i, size_t n)
{
    while (i < n && t[i] >= '0' && t[i] <= '9')
        i++;
    return i;
}

static const cx_json_value *parse_number(parser *p)
{
    size_t start = p->pos;
    const unsigned char *t = p->text;
    size_t n = p->length;
    size_t i = start;
    int integral = 1;
    if (i < n && t[i] == '-')
        i++;
    if (i < n && t[i] == '0') {
        i++;
    } else if (i < n && t[i] >= '1' && t[i] <= '9') {
        i = skip_digits(t, i, n);
    } else {
        p->pos = i;
        return fail(p, "invalid number");
    }
    if (i < n && t[i] == '.') {
        integral = 0;
        size_t digits = ++i;
        i = skip_digits(t, i, n);
        if (i == digits) {
            p->pos = i;
            return fail(p, "invalid number: expected a digit after '.'");
        }
    }
    if (i < n && (t[i] == 'e' || t[i] == 'E')) {
        integral = 0;
        i++;
        if (i < n && (t[i] == '+' || t[i] == '-'))
            i++;
        size_t digits = i;
        i = skip_digits(t, i, n);
        if (i == digits) {
            p->pos = i;
            return fail(p, "invalid number: expected a digit in the exponent");
        }
    }
    size_t literal_length = i - start;
    if (literal_length > JSON_MAX_NUMBER_LENGTH)
        return fail(p, "number literal too long");

    /* strtod follows LC_NUMERIC, so the '.' is replaced by the locale's decimal point in a
     * bounded, NUL-terminated copy. */
    char copy[JSON_MAX_NUMBER_LENGTH + 16];
    const char *point = localeconv()->decimal_point;
    size_t point_length = (point != NULL && point[0] != '\0') ? strlen(point) : 0;
    if (point_length == 0 || point_length > 8) {
        point = ".";
        point_length = 1;
    }
    size_t c = 0;
    for (size_t k = start; k < i; k++) {
        if (t[k] == '.') {
            memcpy(copy + c, point, point_length);
            c += point_length;
        } else {
            copy[c++] = (char)t[k];
        }
    }
    copy[c] = '\0';

    cx_json_value *value = new_value(p, CX_JSON_NUMBER);
    if (value == NULL)
        return NULL;
    errno = 0;
    char *parsed_end = NULL;
    double d = strtod(copy, &parsed_end);
    if (parsed_end != copy + c)
        return fail(p, "invalid number");
    if (errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL))
        return fail(p, "number out of range");
    value->as.number.value = d;
    if (integral) {
        errno = 0;
        long long whole = strtoll(copy, &parsed_end, 10);
        if (errno == 0 && parsed_end == copy + c) {
            value->as.number.integer = (int64_t)whole;
            value->as.number.is_integer = 1;
        }
    } else if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
        value->as.number.integer = (int64_t)d;
        value->as.number.is_integer = 1;
    }
    p->pos = i;
    return value;
}

static int compare_members(const void *a, const void *b)
{
    const cx_json_member *x = *(const cx_json_member *const *)a;
    const cx_json_member *y = *(const cx_json_member *const *)b;
    size_t common = x->key_length < y->key_length ? x->key_length : y->key_length;
    int order = memcmp(x->key, y->key, common);
    if (order != 0)
        return order;
    if (x->key_length != y->key_length)
        return x->key_length < y->key_length ? -1 : 1;
    return x->offset < y->offset ? -1 : (x->offset > y->offset);
}

static const cx_json_value *parse_value(parser *p, int depth);

/* After the opening bracket of an array or object: 1 when `close` follows (an empty container;
 * the bracket is consumed), else 0. */
static int open_container(parser *p, unsigned char close)
{
    p->pos++; /* '[' or '{' */
    skip_whitespace(p);
    if (p->pos < p->length && p->text[p->pos] == close) {
        p->pos++;
        return 1;
    }
    return 0;
}

/* After an item of an array or object: ',' (0: another item follows) or `close` (1: the end);
 * anything else fails with `unterminated` at the end of the text, else `expected` (-1). */
static int after_item(parser *p, unsigned char close, const char *unterminated,
                      const char *expected)
{
    skip_whitespace(p);
    if (p->pos >= p->length) {
        fail(p, unterminated);
        return -1;
    }
    unsigned char c = p->text[p->pos++];
    if (c == close)
        return 1;
    if (c != ',') {
        p->pos--;
        fail(p, expected);
        return -1;
    }
    return 0;
}

static const cx_json_value *parse_array(parser *p, int depth)
{
    size_t base = p->items.count;
    int end = open_container(p, ']');
    while (end == 0) {
        const cx_json_value *item = parse_value(p, depth + 1);
        if (item == NULL || !scratch_push(p, &p->items, &item))
            return NULL;
        end = after_item(p, ']', "unterminated array", "expected ',' or ']' in array");
    }
    if (end < 0)
        return NULL;
    size_t count = p->items.count - base;
    const cx_json_value **items = scratch_pop(p, &p->items, base);
    if (items == NULL)
        return NULL;
    cx_json_value *value = new_value(p, CX_JSON_ARRAY);
    if (value != NULL) {
        value->as.array.items = items;
        value->as.array.count = count;
    }
    return value;
}

/* One member of an object, from its key at p->pos to the end of its value; returns the value
 * (also in member->value), or NULL (failed). */
static const cx_json_value *parse_member(parser *p, int depth, cx_json_member *member)
{
    skip_whitespace(p);
    if (p->pos >= p->length)
        return fail(p, "unterminated object");
    if (p->text[p->pos] != '"')
        return fail(p, "expected a string key in object");
    member->offset = p->pos;
    if (!parse_string(p, &member->key, &member->key_length))
        return NULL;
    skip_whitespace(p);
    if (p->pos >= p->length || p->text[p->pos] != ':')
        return fail(p, "expected ':' after object key");
    p->pos++;
    member->value = parse_value(p, depth + 1);
    return member->value;
}

/* Fills sorted[count] with the members ordered by key (then by position); 0 (failed) when a
 * key stands twice, reported at its second place. */
static int sort_members(parser *p, const cx_json_member *members, const cx_json_member **sorted,
                        size_t count)
{
    for (size_t i = 0; i < count; i++)
        sorted[i] = &members[i];
    if (count > 1)
        qsort(sorted, count, sizeof *sorted, compare_members);
    for (size_t i = 1; i < count; i++) {
        const cx_json_member *a = sorted[i - 1], *b = sorted[i];
        if (a->key_length == b->key_length && memcmp(a->key, b->key, a->key_length) == 0) {
            p->pos = b->offset;
            if (p->status == CX_OK)
                p->status = cx_error_set(p->err, CX_ERR_FORMAT,
                                         "invalid JSON (%s): duplicate key \"%.*s\" at byte %zu",
                                         p->source, (int)(b->key_length > 80 ? 80 : b->key_length),
                                         b->key, b->offset);
            return 0;
        }
    }
    return 1;
}

static const cx_json_value *parse_object(parser *p, int depth)
{
    size_t base = p->members.count;
    int end = open_container(p, '}');
    while (end == 0) {
        cx_json_member member;
        if (parse_member(p, depth, &member) == NULL || !scratch_push(p, &p->members, &member))
            return NULL;
        end = after_item(p, '}', "unterminated object", "expected ',' or '}' in object");
    }
    if (end < 0)
        return NULL;
    size_t count = p->members.count - base;
    const cx_json_member *members = scratch_pop(p, &p->members, base);
    if (members == NULL)
        return NULL;
    const cx_json_member **sorted = arena_alloc(p->document, count * sizeof *sorted);
    if (sorted == NULL)
        return fail_nomem(p);
    if (!sort_members(p, members, sorted, count))
        return NULL;
    cx_json_value *value = new_value(p, CX_JSON_OBJECT);
    if (value != NULL) {
        value->as.object.members = members;
        value->as.object.sorted = sorted;
        value->as.object.count = count;
    }
    return value;
}

static int match_literal(parser *p, const char *literal)
{
    size_t n = strlen(literal);
    if (p->length - p->pos < n || memcmp(p->text + p->pos, literal, n) != 0)
        return 0;
    p->pos += n;
    return 1;
}

static const cx_json_value *parse_value(parser *p, int depth)
{
    if (depth > JSON_MAX_DEPTH)
        return fail(p, "nesting deeper than 64 levels");
    skip_whitespace(p);
    if (p->pos >= p->length)
        return fail(p, "unexpected end of input");
    unsigned char c = p->text[p->pos];
    cx_json_value *value;
    switch (c) {
    case '{':
        return parse_object(p, depth);
    case '[':
        return parse_array(p, depth);
    case '"': {
        const char *data;
        size_t length;
        if (!parse_string(p, &data, &length))
            return NULL;
        value = new_value(p, CX_JSON_STRING);
        if (value == NULL)
            return NULL;
        value->as.string.data = data;
        value->as.string.length = length;
        return value;
    }
    case 't':
    case 'f':
        if (!match_literal(p, c == 't' ? "true" : "false"))
            return fail(p, "invalid literal");
        value = new_value(p, CX_JSON_BOOL);
        if (value != NULL)
            value->as.boolean = (c == 't');
        return value;
    case 'n':
        if (!match_literal(p, "null"))
            return fail(p, "invalid literal");
        return new_value(p, CX_JSON_NULL);
    default:
        if (c == '-' || (c >= '0' && c <= '9'))
            return parse_number(p);
        return fail(p, "unexpected character");
    }
}

cx_json_document *cx_json_parse(const char *text, size_t length, const char *source, cx_error *err)
{
    if (source == NULL)
        source = "JSON";
    if (text == NULL && length != 0) {
        cx_error_set(err, CX_ERR_ARGUMENT, "invalid JSON (%s): no text", source);
        return NULL;
    }
    cx_json_document *document = calloc(1, sizeof *document);
    if (document == NULL) {
        cx_error_set(err, CX_ERR_NOMEM, "out of memory (%s): while parsing JSON", source);
        return NULL;
    }
    parser p = {.text = (const unsigned char *)text,
                .length = length,
                .source = source,
                .err = err,
                .status = CX_OK,
                .document = document,
                .items = {.element_size = sizeof(const cx_json_value *)},
                .members = {.element_size = sizeof(cx_json_member)}};
    /* A UTF-8 byte order mark is not JSON, but some editors write one; skip it. */
    if (length >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        p.pos = 3;
    const cx_json_value *root = parse_value(&p, 1);
    if (root != NULL) {
        skip_whitespace(&p);
        if (p.pos != p.length)
            root = fail(&p, "unexpected data after the document");
    }
    free(p.items.data);
    free(p.members.data);
    if (root == NULL) {
        cx_json_free(document);
        return NULL;
    }
    document->root = root;
    return document;
}

void cx_json_free(cx_json_document *document)
{
    if (document == NULL)
        return;
    arena_block *block = document->blocks;
    while (block != NULL) {
        arena_block *next = block->next;
        free(block);
        block = next;
    }
    free(document);
}

const cx_json_value *cx_json_root(const cx_json_document *document)
{
    return document != NULL ? document->root : NULL;
}

cx_json_type cx_json_type_of(const cx_json_value *value)
{
    return value != NULL ? value->type : CX_JSON_NULL;
}

const cx_json_value *cx_json_get(const cx_json_value *object, const char *key)
{
    if (object == NULL || object->type != CX_JSON_OBJECT || key == NULL)
        return NULL;
    size_t key_length = strlen(key);
    size_t low = 0, high = object->as.object.count;
    while (low < high) {
        size_t mid = low + (high - low) / 2;
        const cx_json_member *m = object->as.object.sorted[mid];
        size_t common = m->key_length < key_length ? m->key_length : key_length;
        int order = memcmp(m->key, key, common);
        if (order == 0 && m->key_length != key_length)
            order = m->key_length < key_length ? -1 : 1;
        if (order == 0)
            return m->value;
        if (order < 0)
            low = mid + 1;
        else
            high = mid;
    }
    return NULL;
}

size_t cx_json_object_size(const cx_json_value *object)
{
    return (object != NULL && object->type == CX_JSON_OBJECT) ? object->as.object.count : 0;
}

const char *cx_json_object_key(const cx_json_value *object, size_t index)
{
    if (index >= cx_json_object_size(object))
        return NULL;
    return object->as.object.members[index].key;
}

const cx_json_value *cx_json_object_value(const cx_json_value *object, size_t index)
{
    if (index >= cx_json_object_size(object))
        return NULL;
    return object->as.object.members[index].value;
}

size_t cx_json_array_size(const cx_json_value *array)
{
    return (array != NULL && array->type == CX_JSON_ARRAY) ? array->as.array.count : 0;
}

const cx_json_value *cx_json_array_item(const cx_json_value *array, size_t index)
{
    if (index >= cx_json_array_size(array))
        return NULL;
    return array->as.array.items[index];
}

int cx_json_as_bool(const cx_json_value *value, int *out)
{
    if (value == NULL || value->type != CX_JSON_BOOL)
        return 0;
    *out = value->as.boolean;
    return 1;
}

int cx_json_as_double(const cx_json_value *value, double *out)
{
    if (value == NULL || value->type != CX_JSON_NUMBER)
        return 0;
    *out = value->as.number.value;
    return 1;
}

int cx_json_as_int64(const cx_json_value *value, int64_t *out)
{
    if (value == NULL || value->type != CX_JSON_NUMBER || !value->as.number.is_integer)
        return 0;
    *out = value->as.number.integer;
    return 1;
}

int cx_json_as_string(const cx_json_value *value, const char **out)
{
    if (value == NULL || value->type != CX_JSON_STRING)
        return 0;
    *out = value->as.string.data;
    return 1;
}
