/* cx_tokenizer.c: BERT WordPiece tokenizer: vocabulary hash table, one-pass streaming
 * normalizer and greedy longest-match-first WordPiece, id for id with Hugging Face `tokenizers`.
 *
 * The text is read once, left to right, through four stages that hand code points on:
 *   input   decode UTF-8 (invalid bytes vanish), match raw special tokens, drop controls,
 *           map whitespace to a space, pad CJK ideographs with spaces;
 *   nfd     (lowercase mode) full canonical decomposition, dropping nonspacing marks and
 *           buffering a run of surviving combining marks until canonical reordering can sort it;
 *   lower   (lowercase mode) full lowercase mapping;
 *   split   spaces end the word, punctuation is a word of its own, anything else joins the word.
 * A finished word goes through WordPiece at once, so nothing grows with the text: the word
 * buffer keeps at most 101 characters (one more than tokenizers' max_input_chars_per_word, enough
 * to know the word becomes [UNK]) and the run buffer a bounded number of marks. */
#include "cx_tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cx_unicode_tables.h"

#define MAX_WORD_CHARS 100 /* longer words become [UNK], as in tokenizers */
#define WORD_BYTES ((MAX_WORD_CHARS + 1) * 4)
/* Surviving combining marks sorted at once. A longer run (all of it in one word, which the
 * generator checks) makes a word of more than MAX_WORD_CHARS characters, i.e. [UNK], so the
 * order of its marks cannot matter. */
#define RUN_CAPACITY 128

#define FNV_BASIS 2166136261u
#define FNV_PRIME 16777619u

#define HANGUL_S_BASE 0xAC00u
#define HANGUL_L_BASE 0x1100u
#define HANGUL_V_BASE 0x1161u
#define HANGUL_T_BASE 0x11A7u
#define HANGUL_T_COUNT 28u
#define HANGUL_N_COUNT 588u /* V count (21) * T count */
#define HANGUL_S_COUNT 11172u

typedef struct vocab_slot {
    uint32_t hash; /* FNV-1a of the whole token text, "##" included */
    int32_t id;    /* -1: empty slot */
} vocab_slot;

typedef struct special_token {
    const char *text; /* borrowed from the tokenizer's vocabulary text */
    size_t length;
    int32_t id;
} special_token;

typedef struct vocab_entry {
    uint32_t offset; /* of the token in the vocabulary text */
    uint32_t length; /* in bytes */
} vocab_entry;

struct cx_tokenizer {
    char *text;             /* owned: the vocabulary file, each token NUL-terminated in place */
    vocab_entry *entries;   /* owned [vocab_size]: where each token lies in text */
    int64_t vocab_size;
    vocab_slot *slots;      /* owned [mask + 1]: token text -> id, linear probing, load <= 1/2 */
    uint32_t mask;
    size_t longest_start;   /* longest token not starting with "##", in bytes */
    size_t longest_suffix;  /* longest "##" token without its "##", in bytes */
    int32_t pad_id, unk_id, cls_id, sep_id;
    special_token specials[5]; /* [PAD] [UNK] [CLS] [SEP] [MASK] found in the vocabulary */
    int special_count;
    int lowercase;          /* strip accents (NFD, drop Mn) and lowercase */
};

/* ---- vocabulary ------------------------------------------------------------------------- */

static uint32_t fnv_update(uint32_t hash, const char *bytes, size_t length)
{
    for (size_t i = 0; i < length; i++)
        hash = (hash ^ (uint8_t)bytes[i]) * FNV_PRIME;
    return hash;
}

/* FNV-1a's low bits are weak; the slot index uses mixed bits. */
static uint32_t slot_of(uint32_t hash, uint32_t mask)
{
    hash ^= hash >> 16;
    hash *= 0x45d9f3bu;
    hash ^= hash >> 16;
    return hash & mask;
}

/* Id of the token `prefix` + bytes[0, length) where prefix is "##" when `continuation`;
 * `hash` is the FNV-1a of that whole text. -1 when absent. */
static int32_t vocab_find(const cx_tokenizer *t, uint32_t hash, int continuation,
                          const char *bytes, size_t length)
{
    size_t prefix = continuation ? 2 : 0;
    for (uint32_t slot = slot_of(hash, t->mask);; slot = (slot + 1) & t->mask) {
        int32_t id = t->slots[slot].id;
        if (id < 0)
            return -1;
        if (t->slots[slot].hash != hash || t->entries[id].length != length + prefix)
            continue;
        const char *token = t->text + t->entries[id].offset;
        if (continuation && (token[0] != '#' || token[1] != '#'))
            continue;
        token += prefix;
        size_t i = 0; /* tokens are short: a plain loop beats a call to memcmp */
        while (i < length && token[i] == bytes[i])
            i++;
        if (i == length)
            return id;
    }
}

static int32_t vocab_find_text(const cx_tokenizer *t, const char *text)
{
    size_t length = strlen(text);
    return vocab_find(t, fnv_update(FNV_BASIS, text, length), 0, text, length);
}

/* Inserts every token; a repeated token keeps its last id, as tokenizers' vocabulary map does. */
static void vocab_index(cx_tokenizer *t)
{
    for (int64_t id = 0; id < t->vocab_size; id++) {
        const char *token = t->text + t->entries[id].offset;
        size_t length = t->entries[id].length;
        uint32_t hash = fnv_update(FNV_BASIS, token, length);
        uint32_t slot = slot_of(hash, t->mask);
        while (t->slots[slot].id >= 0) {
            const vocab_entry *other = &t->entries[t->slots[slot].id];
            if (t->slots[slot].hash == hash && other->length == length
                && memcmp(t->text + other->offset, token, length) == 0)
                break;
            slot = (slot + 1) & t->mask;
        }
        t->slots[slot].hash = hash;
        t->slots[slot].id = (int32_t)id;
        if (length >= 2 && token[0] == '#' && token[1] == '#') {
            if (length - 2 > t->longest_suffix)
                t->longest_suffix = length - 2;
        } else if (length > t->longest_start) {
            t->longest_start = length;
        }
    }
}

/* Reads the whole file into a NUL-terminated buffer the caller frees; NULL with *status and
 * `err` set on failure. */
static char *read_file(const char *path, size_t *size, cx_status *status, cx_error *err)
{
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        *status = cx_error_set(err, CX_ERR_IO, "cannot open vocabulary (%s): %s", path,
                               strerror(errno));
        return NULL;
    }
    char *data = NULL;
    size_t used = 0, capacity = 1 << 16;
    for (;;) {
        char *grown = realloc(data, capacity + 1);
        if (grown == NULL) {
            *status = cx_error_set(err, CX_ERR_NOMEM, "cannot read vocabulary (%s): out of "
                                   "memory", path);
            goto fail;
        }
        data = grown;
        used += fread(data + used, 1, capacity - used, file);
        if (used < capacity)
            break;
        capacity *= 2;
    }
    if (ferror(file)) {
        *status = cx_error_set(err, CX_ERR_IO, "cannot read vocabulary (%s): %s", path,
                               strerror(errno));
        goto fail;
    }
    fclose(file);
    data[used] = '\0';
    *size = used;
    return data;
fail:
    free(data);
    fclose(file);
    return NULL;
}

static int is_trailing_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Splits the text into lines (ids = line numbers), trimming trailing whitespace as tokenizers'
 * `trim_end` does, and NUL-terminates each token in place. */
static cx_status vocab_split(cx_tokenizer *t, size_t size, const char *path, cx_error *err)
{
    int64_t lines = 0;
    for (size_t i = 0; i < size; i++)
        lines += t->text[i] == '\n';
    if (size > 0 && t->text[size - 1] != '\n')
        lines++;
    if (lines == 0)
        return cx_error_set(err, CX_ERR_MODEL, "unusable vocabulary (%s): the file is empty",
                            path);
    if (size >= UINT32_MAX || lines > INT32_MAX / 2) /* offsets are 32-bit, slots 2 per token */
        return cx_error_set(err, CX_ERR_MODEL, "unusable vocabulary (%s): the file is too large",
                            path);
    t->vocab_size = lines;
    t->entries = malloc((size_t)lines * sizeof *t->entries);
    if (t->entries == NULL)
        return cx_error_set(err, CX_ERR_NOMEM, "cannot load vocabulary (%s): out of memory", path);
    size_t start = 0;
    for (int64_t id = 0; id < lines; id++) {
        size_t end = start;
        while (end < size && t->text[end] != '\n')
            end++;
        size_t next = end + 1;
        while (end > start && is_trailing_space(t->text[end - 1]))
            end--;
        t->text[end] = '\0';
        t->entries[id] = (vocab_entry){(uint32_t)start, (uint32_t)(end - start)};
        start = next;
    }
    uint32_t slots = 16;
    while (slots < 2 * (uint64_t)lines)
        slots *= 2;
    t->mask = slots - 1;
    t->slots = malloc(slots * sizeof *t->slots);
    if (t->slots == NULL)
        return cx_error_set(err, CX_ERR_NOMEM, "cannot load vocabulary (%s): out of memory", path);
    for (uint32_t i = 0; i < slots; i++)
        t->slots[i] = (vocab_slot){0, -1};
    return CX_OK;
}

/* The special tokens: required ids and the raw-text matches tokenizers makes before
 * normalizing (its BERT tokenizers declare these five as added tokens). */
static cx_status vocab_specials(cx_tokenizer *t, const char *path, cx_error *err)
{
    static const char *const required[] = {"[UNK]", "[CLS]", "[SEP]"};
    for (size_t i = 0; i < sizeof required / sizeof *required; i++)
        if (vocab_find_text(t, required[i]) < 0)
            return cx_error_set(err, CX_ERR_MODEL, "unusable vocabulary (%s): no %s token", path,
                                required[i]);
    t->unk_id = vocab_find_text(t, "[UNK]");
    t->cls_id = vocab_find_text(t, "[CLS]");
    t->sep_id = vocab_find_text(t, "[SEP]");
    t->pad_id = vocab_find_text(t, "[PAD]");
    if (t->pad_id < 0)
        t->pad_id = 0;
    static const char *const specials[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    for (size_t i = 0; i < sizeof specials / sizeof *specials; i++) {
        int32_t id = vocab_find_text(t, specials[i]);
        if (id >= 0)
            t->specials[t->special_count++] = (special_token){specials[i], strlen(specials[i]), id};
    }
    return CX_OK;
}

cx_tokenizer *cx_tokenizer_open(const char *vocab_path, int lowercase, cx_status *status,
                                cx_error *err)
{
    cx_status ignored;
    if (status == NULL)
        status = &ignored;
    *status = CX_OK;
    if (vocab_path == NULL) {
        *status = cx_error_set(err, CX_ERR_ARGUMENT, "cannot load vocabulary: no path given");
        return NULL;
    }
    cx_tokenizer *t = calloc(1, sizeof *t);
    if (t == NULL) {
        *status = cx_error_set(err, CX_ERR_NOMEM, "cannot load vocabulary (%s): out of memory",
                               vocab_path);
        return NULL;
    }
    t->lowercase = lowercase != 0;
    size_t size = 0;
    t->text = read_file(vocab_path, &size, status, err);
    if (t->text == NULL)
        goto fail;
    *status = vocab_split(t, size, vocab_path, err);
    if (*status != CX_OK)
        goto fail;
    vocab_index(t);
    *status = vocab_specials(t, vocab_path, err);
    if (*status != CX_OK)
        goto fail;
    return t;
fail:
    cx_tokenizer_free(t);
    return NULL;
}

cx_tokenizer *cx_tokenizer_new(const char *vocab_path, int lowercase, cx_error *err)
{
    return cx_tokenizer_open(vocab_path, lowercase, NULL, err);
}

void cx_tokenizer_free(cx_tokenizer *tokenizer)
{
    if (tokenizer == NULL)
        return;
    free(tokenizer->slots);
    free(tokenizer->entries);
    free(tokenizer->text);
    free(tokenizer);
}

int64_t cx_tokenizer_vocab_size(const cx_tokenizer *tokenizer) { return tokenizer->vocab_size; }
int32_t cx_tokenizer_pad_id(const cx_tokenizer *tokenizer) { return tokenizer->pad_id; }
int32_t cx_tokenizer_unk_id(const cx_tokenizer *tokenizer) { return tokenizer->unk_id; }
int32_t cx_tokenizer_cls_id(const cx_tokenizer *tokenizer) { return tokenizer->cls_id; }
int32_t cx_tokenizer_sep_id(const cx_tokenizer *tokenizer) { return tokenizer->sep_id; }

const char *cx_tokenizer_id_to_token(const cx_tokenizer *tokenizer, int32_t id)
{
    if (id < 0 || id >= tokenizer->vocab_size)
        return NULL;
    return tokenizer->text + tokenizer->entries[id].offset;
}

/* ---- the streaming pipeline --------------------------------------------------------------- */

typedef struct sink {
    int32_t *ids;     /* where pieces go; NULL when only counting */
    int64_t capacity; /* pieces wanted: max_tokens - 2, or INT64_MAX */
    int64_t count;    /* pieces produced (only the first `capacity` are stored) */
} sink;

typedef struct state {
    const cx_tokenizer *t;
    sink *out;
    /* The word being built: UTF-8 of its first characters and where each starts. */
    char word[WORD_BYTES];
    uint16_t starts[MAX_WORD_CHARS + 2]; /* starts[chars] is set to the end before WordPiece */
    int chars;                           /* saturates at MAX_WORD_CHARS + 1: "too long" */
    size_t length;                       /* bytes of word[] in use */
    /* Combining marks waiting for canonical reordering (nonzero class, not dropped). */
    uint32_t run[RUN_CAPACITY];
    uint8_t run_class[RUN_CAPACITY];
    int run_length;
} state;

static const cx_unicode_record *record_of(uint32_t cp)
{
    uint32_t block = cx_unicode_stage1[cp >> CX_UNICODE_SHIFT];
    return &cx_unicode_records[cx_unicode_stage2[(block << CX_UNICODE_SHIFT)
                                                 | (cp & CX_UNICODE_MASK)]];
}

static void emit(state *s, int32_t id)
{
    sink *out = s->out;
    if (out->count < out->capacity) {
        if (out->ids != NULL)
            out->ids[out->count] = id;
        out->count++;
    }
}

static size_t utf8_put(char *at, uint32_t cp)
{
    if (cp < 0x80) {
        at[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        at[0] = (char)(0xC0 | (cp >> 6));
        at[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        at[0] = (char)(0xE0 | (cp >> 12));
        at[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        at[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    at[0] = (char)(0xF0 | (cp >> 18));
    at[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    at[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    at[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static void word_push(state *s, uint32_t cp)
{
    if (s->chars >= MAX_WORD_CHARS) {
        s->chars = MAX_WORD_CHARS + 1; /* too long: only the fact matters now */
        return;
    }
    s->starts[s->chars++] = (uint16_t)s->length;
    s->length += utf8_put(s->word + s->length, cp);
}

/* Greedy longest-match-first over the word's characters; one [UNK] for the whole word when a
 * position matches nothing. Candidate ends are hashed incrementally from each start, and only
 * as far as the longest token of the vocabulary reaches. */
static void word_piece(state *s)
{
    const cx_tokenizer *t = s->t;
    int32_t pieces[MAX_WORD_CHARS];
    uint32_t hashes[MAX_WORD_CHARS + 1];
    int count = 0;
    s->starts[s->chars] = (uint16_t)s->length;
    for (int start = 0; start < s->chars;) {
        int continuation = start > 0;
        size_t begin = s->starts[start];
        size_t reach = continuation ? t->longest_suffix : t->longest_start;
        uint32_t hash = continuation ? fnv_update(FNV_BASIS, "##", 2) : FNV_BASIS;
        int last = start;
        for (int end = start + 1; end <= s->chars && s->starts[end] - begin <= reach; end++) {
            hash = fnv_update(hash, s->word + s->starts[end - 1],
                              (size_t)(s->starts[end] - s->starts[end - 1]));
            hashes[end] = hash;
            last = end;
        }
        int32_t id = -1;
        int end = last;
        for (; end > start; end--) {
            id = vocab_find(t, hashes[end], continuation, s->word + begin, s->starts[end] - begin);
            if (id >= 0)
                break;
        }
        if (id < 0) {
            emit(s, t->unk_id);
            return;
        }
        pieces[count++] = id;
        start = end;
    }
    for (int i = 0; i < count; i++)
        emit(s, pieces[i]);
}

static void word_end(state *s)
{
    if (s->chars == 0)
        return;
    if (s->chars > MAX_WORD_CHARS)
        emit(s, s->t->unk_id);
    else
        word_piece(s);
    s->chars = 0;
    s->length = 0;
}

/* split stage: `flags` are those of `cp`. */
static void split(state *s, uint32_t cp, uint8_t flags)
{
    if (flags & CX_UNICODE_WHITESPACE) {
        word_end(s);
    } else if (flags & CX_UNICODE_PUNCTUATION) {
        word_end(s);
        word_push(s, cp);
        word_end(s);
    } else {
        word_push(s, cp);
    }
}

/* lower stage (lowercase mode only). */
static void lower(state *s, uint32_t cp, const cx_unicode_record *record)
{
    if (record->lowercase_length == 0) {
        split(s, cp, record->flags);
        return;
    }
    for (int i = 0; i < record->lowercase_length; i++) {
        uint32_t low = cx_unicode_pool[record->lowercase + i];
        split(s, low, record_of(low)->flags);
    }
}

/* Canonical reordering: a stable sort of the run by combining class (insertion sort: runs are
 * short, and bounded by RUN_CAPACITY). */
static void run_end(state *s)
{
    for (int i = 1; i < s->run_length; i++) {
        uint32_t cp = s->run[i];
        uint8_t class = s->run_class[i];
        int j = i;
        for (; j > 0 && s->run_class[j - 1] > class; j--) {
            s->run[j] = s->run[j - 1];
            s->run_class[j] = s->run_class[j - 1];
        }
        s->run[j] = cp;
        s->run_class[j] = class;
    }
    int length = s->run_length;
    s->run_length = 0;
    for (int i = 0; i < length; i++)
        lower(s, s->run[i], record_of(s->run[i]));
}

/* One code point of the decomposition. Dropping a nonspacing mark before sorting keeps the
 * order of the survivors, and the dropped mark never ends a run (only class 0 does). */
static void decomposed(state *s, uint32_t cp, const cx_unicode_record *record)
{
    if (record->combining_class == 0) {
        if (s->run_length > 0)
            run_end(s);
        if (!(record->flags & CX_UNICODE_MARK))
            lower(s, cp, record);
        return;
    }
    if (record->flags & CX_UNICODE_MARK)
        return;
    if (s->run_length == RUN_CAPACITY)
        run_end(s);
    s->run[s->run_length] = cp;
    s->run_class[s->run_length] = record->combining_class;
    s->run_length++;
}

/* nfd stage in lowercase mode, the split stage directly otherwise. */
static void normalized(state *s, uint32_t cp, const cx_unicode_record *record)
{
    if (!s->t->lowercase) {
        split(s, cp, record->flags);
        return;
    }
    if (cp - HANGUL_S_BASE < HANGUL_S_COUNT) {
        uint32_t index = cp - HANGUL_S_BASE;
        uint32_t jamo[3] = {HANGUL_L_BASE + index / HANGUL_N_COUNT,
                            HANGUL_V_BASE + (index % HANGUL_N_COUNT) / HANGUL_T_COUNT,
                            HANGUL_T_BASE + index % HANGUL_T_COUNT};
        for (int i = 0; i < (jamo[2] == HANGUL_T_BASE ? 2 : 3); i++)
            decomposed(s, jamo[i], record_of(jamo[i]));
        return;
    }
    if (record->decomposition_length == 0) {
        decomposed(s, cp, record);
        return;
    }
    for (int i = 0; i < record->decomposition_length; i++) {
        uint32_t part = cx_unicode_pool[record->decomposition + i];
        decomposed(s, part, record_of(part));
    }
}

/* A space from the input stage: class 0, so it closes a pending run, then the word. */
static void space(state *s)
{
    if (s->run_length > 0)
        run_end(s);
    word_end(s);
}

/* input stage for a decoded non-ASCII code point. */
static void input(state *s, uint32_t cp)
{
    const cx_unicode_record *record = record_of(cp);
    if ((record->flags & CX_UNICODE_CONTROL) || cp == 0xFFFD)
        return;
    if (record->flags & CX_UNICODE_WHITESPACE) {
        space(s);
    } else if (record->flags & CX_UNICODE_CJK) {
        space(s);
        normalized(s, cp, record);
        space(s);
    } else {
        normalized(s, cp, record);
    }
}

/* Length of the valid, shortest-form UTF-8 sequence at `p` (with `n` > 0 bytes available) and
 * its code point; 0 when the first byte starts no such sequence. */
static size_t utf8_next(const uint8_t *p, size_t n, uint32_t *cp)
{
    uint8_t b = p[0];
    if (b >= 0xC2 && b <= 0xDF) {
        if (n < 2 || (p[1] & 0xC0) != 0x80)
            return 0;
        *cp = ((uint32_t)(b & 0x1F) << 6) | (p[1] & 0x3F);
        return 2;
    }
    if (b >= 0xE0 && b <= 0xEF) {
        uint8_t low = b == 0xE0 ? 0xA0 : 0x80, high = b == 0xED ? 0x9F : 0xBF;
        if (n < 3 || p[1] < low || p[1] > high || (p[2] & 0xC0) != 0x80)
            return 0;
        *cp = ((uint32_t)(b & 0x0F) << 12) | ((uint32_t)(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
        return 3;
    }
    if (b >= 0xF0 && b <= 0xF4) {
        uint8_t low = b == 0xF0 ? 0x90 : 0x80, high = b == 0xF4 ? 0x8F : 0xBF;
        if (n < 4 || p[1] < low || p[1] > high || (p[2] & 0xC0) != 0x80
            || (p[3] & 0xC0) != 0x80)
            return 0;
        *cp = ((uint32_t)(b & 0x07) << 18) | ((uint32_t)(p[1] & 0x3F) << 12)
              | ((uint32_t)(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
        return 4;
    }
    return 0;
}

/* The special token spelled at `p`, or NULL. */
static const special_token *special_at(const cx_tokenizer *t, const uint8_t *p, size_t n)
{
    for (int i = 0; i < t->special_count; i++) {
        const special_token *special = &t->specials[i];
        if (special->length <= n && memcmp(p, special->text, special->length) == 0)
            return special;
    }
    return NULL;
}

static void tokenize(const cx_tokenizer *t, const char *text, size_t length, sink *out)
{
    state s;
    s.t = t;
    s.out = out;
    s.chars = 0;
    s.length = 0;
    s.run_length = 0;
    const uint8_t *p = (const uint8_t *)text;
    size_t i = 0;
    while (i < length && out->count < out->capacity) {
        uint8_t b = p[i];
        if (b >= 0x80) {
            uint32_t cp;
            size_t n = utf8_next(p + i, length - i, &cp);
            if (n == 0) {
                i++; /* invalid: U+FFFD in tokenizers, which clean_text drops */
                continue;
            }
            i += n;
            input(&s, cp);
            continue;
        }
        /* ASCII fast path: class 0, no decomposition, lowercase is A-Z + 32 (the generator
         * checks all three). */
        uint8_t flags = cx_unicode_ascii_flags[b];
        i++;
        if (flags & CX_UNICODE_CONTROL)
            continue; /* dropped before NFD: does not close a run of marks */
        if (s.run_length > 0)
            run_end(&s);
        if (flags == 0) {
            if (t->lowercase && b >= 'A' && b <= 'Z')
                b += 'a' - 'A';
            if (s.chars < MAX_WORD_CHARS) {
                s.starts[s.chars++] = (uint16_t)s.length;
                s.word[s.length++] = (char)b;
            } else {
                s.chars = MAX_WORD_CHARS + 1;
            }
            continue;
        }
        if (b == '[' && t->special_count > 0) {
            const special_token *special = special_at(t, p + i - 1, length - i + 1);
            if (special != NULL) {
                word_end(&s);
                emit(&s, special->id);
                i += special->length - 1;
                continue;
            }
        }
        split(&s, b, flags);
    }
    if (out->count < out->capacity) {
        if (s.run_length > 0)
            run_end(&s);
        word_end(&s);
    }
}

int64_t cx_tokenizer_encode(const cx_tokenizer *tokenizer, const char *text, size_t length,
                            int32_t *ids, int64_t max_tokens, cx_error *err)
{
    if (tokenizer == NULL || ids == NULL || (text == NULL && length > 0))
        return cx_error_set(err, CX_ERR_ARGUMENT, "cannot encode: missing tokenizer, text or ids");
    if (max_tokens < 2)
        return cx_error_set(err, CX_ERR_ARGUMENT,
                            "cannot encode (max_tokens=%lld): need room for [CLS] and [SEP], "
                            "at least 2", (long long)max_tokens);
    sink out = {ids + 1, max_tokens - 2, 0};
    tokenize(tokenizer, text, length, &out);
    ids[0] = tokenizer->cls_id;
    ids[out.count + 1] = tokenizer->sep_id;
    return out.count + 2;
}

int64_t cx_tokenizer_count(const cx_tokenizer *tokenizer, const char *text, size_t length,
                           cx_error *err)
{
    if (tokenizer == NULL || (text == NULL && length > 0))
        return cx_error_set(err, CX_ERR_ARGUMENT, "cannot count tokens: missing tokenizer or text");
    sink out = {NULL, INT64_MAX, 0};
    tokenize(tokenizer, text, length, &out);
    return out.count + 2;
}

int64_t cx_tokenizer_line_count(const char *text, size_t length)
{
    if (text == NULL || length == 0)
        return 1;
    int64_t lines = 1;
    const char *end = text + length;
    for (const char *p = text; (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++)
        lines++;
    return lines;
}

int64_t cx_tokenizer_count_lines(const cx_tokenizer *tokenizer, const char *text, size_t length,
                                 int64_t *counts, int64_t capacity, cx_error *err)
{
    if (tokenizer == NULL || counts == NULL || (text == NULL && length > 0))
        return cx_error_set(err, CX_ERR_ARGUMENT,
                            "cannot count tokens per line: missing tokenizer, text or counts");
    if (text == NULL)
        text = "";
    int64_t lines = 0;
    size_t start = 0;
    for (;;) {
        const char *newline = length > start ? memchr(text + start, '\n', length - start) : NULL;
        size_t end = newline != NULL ? (size_t)(newline - text) : length;
        if (lines == capacity)
            return cx_error_set(err, CX_ERR_ARGUMENT,
                                "cannot count tokens per line: more than %lld lines (see "
                                "cx_tokenizer_line_count)", (long long)capacity);
        sink out = {NULL, INT64_MAX, 0};
        tokenize(tokenizer, text + start, end - start, &out);
        counts[lines++] = out.count + 2;
        if (newline == NULL)
            return lines;
        start = end + 1;
    }
}
