/* cx_tokenizer.h: BERT WordPiece tokenizer (the uncased BERT pipeline of Hugging Face
 * `tokenizers`: BertNormalizer + BertPreTokenizer + WordPiece + [CLS]/[SEP] template).
 *
 * Pipeline, per input: decode UTF-8; drop NUL, U+FFFD and control characters and map whitespace
 * to ' '; put spaces around CJK ideographs; when lowercasing, NFD-decompose, drop combining marks
 * (Mn) and lowercase; split on whitespace and on punctuation (each punctuation character is a
 * word); WordPiece each word greedily longest-match-first with "##" continuations; a word of more
 * than 100 characters, or one that cannot be matched, becomes [UNK].
 *
 * Invalid UTF-8: every byte that does not start a valid, shortest-form sequence (overlong forms,
 * surrogates U+D800..DFFF, values above U+10FFFF, truncated sequences) decodes to U+FFFD, which
 * the cleaning step drops, exactly as `tokenizers` treats text decoded with errors="replace".
 *
 * A tokenizer is immutable after cx_tokenizer_new and may be used from many threads at once.
 * Time is linear in the input length. */
#ifndef COARCH_CX_TOKENIZER_H
#define COARCH_CX_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "cx_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cx_tokenizer cx_tokenizer; /* opaque: vocabulary hash table and special ids */

/* Reads vocab.txt (one token per line, id = line number). Requires [UNK], [CLS] and [SEP];
 * [PAD] is optional (id 0 when absent). Returns NULL and fills `err` (CX_ERR_IO when the file
 * cannot be read, CX_ERR_MODEL when a special token is missing, CX_ERR_NOMEM). Caller frees with
 * cx_tokenizer_free. */
cx_tokenizer *cx_tokenizer_new(const char *vocab_path, int lowercase, cx_error *err);
void cx_tokenizer_free(cx_tokenizer *tokenizer); /* NULL is fine */

/* Encodes `length` bytes of `text` to ids: [CLS] pieces... [SEP], keeping at most
 * `max_tokens` ids in all (>= 2): when the text has more pieces, the first max_tokens - 2 are
 * kept and [SEP] closes the sequence, as HF truncation does. Writes into `ids` (capacity
 * max_tokens) and returns the number written (>= 2), or a negative cx_status (CX_ERR_ARGUMENT
 * when max_tokens < 2, CX_ERR_NOMEM). Stops reading the text once max_tokens is reached, so a
 * huge text costs no more than its kept prefix. */
int64_t cx_tokenizer_encode(const cx_tokenizer *tokenizer, const char *text, size_t length,
                            int32_t *ids, int64_t max_tokens, cx_error *err);

/* Number of ids the whole text encodes to, [CLS] and [SEP] included, with no truncation;
 * negative cx_status on failure. */
int64_t cx_tokenizer_count(const cx_tokenizer *tokenizer, const char *text, size_t length,
                           cx_error *err);

/* The vocabulary: size, the token text of an id (NULL when out of range), special ids. */
int64_t cx_tokenizer_vocab_size(const cx_tokenizer *tokenizer);
const char *cx_tokenizer_id_to_token(const cx_tokenizer *tokenizer, int32_t id);
int32_t cx_tokenizer_pad_id(const cx_tokenizer *tokenizer);
int32_t cx_tokenizer_unk_id(const cx_tokenizer *tokenizer);
int32_t cx_tokenizer_cls_id(const cx_tokenizer *tokenizer);
int32_t cx_tokenizer_sep_id(const cx_tokenizer *tokenizer);

#ifdef __cplusplus
}
#endif

#endif
