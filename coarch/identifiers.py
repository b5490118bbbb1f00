"""Identifier splitting shared by indexing (FTS5 text) and searching (FTS5 MATCH expressions).

Code search needs both the identifier as written (`parse_config`, `HttpClient`) and its words
(`parse`, `config`, `http`, `client`): a user may type either. Indexing therefore stores every
word of a chunk lowercased *and* followed by its parts; a query goes through the same splitting,
so both sides agree on what a token is.

The FTS5 table is declared with ``tokenize = "porter unicode61 tokenchars '_'"``
(coarch.store.schema.FTS_TOKENIZER): `_` is part of a token, everything that is not a letter,
digit or `_` separates tokens, and each token is then stemmed, on both sides alike. The
functions here produce text that this tokenizer splits into exactly the tokens we mean.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = [
    "TERMS_VERSION",
    "index_terms",
    "model_text",
    "parse_identifier",
    "query_terms",
    "query_words",
    "split_identifier",
]

# Version of what index_terms() produces; bump it with any change to the rules below. The FTS5
# table is contentless: deleting a row needs the very terms it was inserted with, so the store
# records this value (with Python's Unicode version) and rebuilds the table when it differs.
TERMS_VERSION = "1"

# A "word" as the FTS5 unicode61 tokenizer with tokenchars '_' sees it: letters, digits, '_'.
# \w also matches a few connector punctuation characters unicode61 treats as separators; they
# are rare in code and harmless (the tokenizer splits them off again).
_WORD = re.compile(r"\w+")

# A bare identifier query: `parse_config`, `HttpClient.send`, `std::vector`, `os.path.join()`.
_IDENTIFIER_QUERY = re.compile(r"^\s*([^\W\d]\w*(?:(?:\.|::|#|->)[^\W\d]\w*)*)(?:\(\))?\s*$")
_IDENTIFIER_SEPARATORS = re.compile(r"\.|::|#|->")

# English words that carry no meaning in a code-search query. They are dropped from keyword
# queries (unless nothing else is left) because BM25 gains nothing from them and their long
# posting lists make an OR query slow on a large index.
_STOPWORD_TEXT = """
a an and are as at be been but by can do does for from has have how i if in into is it its me my
of on or so than that the their then there these this those to was we were what when where which
who why will with you your
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())

# Scripts written without spaces between words (Han, Kana, Hangul syllables): unicode61 makes
# a whole run one token, so a run also contributes its overlapping character pairs, which lets
# a query match part of a sentence (the usual bigram approach of CJK full-text search).
_CJK_RUN = re.compile(
    "[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
    "\uf900-\ufaff\uff66-\uff9f\U00020000-\U0002fa1f]+"
)

# Cap on distinct query terms: keeps a pasted page of text from turning into a huge OR query.
MAX_QUERY_TERMS = 64


def _char_class(ch: str) -> int:
    """0 separator ('_'), 1 upper-case letter, 2 other letter, 3 digit."""
    if ch == "_":
        return 0
    if ch.isdigit():
        return 3
    if ch.isupper():
        return 1
    return 2


def split_identifier(name: str) -> list[str]:
    """Splits an identifier into its words, keeping their case.

    Boundaries: `_`, `.` and any other non-word character, lower->upper (`parseConfig`),
    the last capital of an acronym before a lower-case letter (`HTTPServer` -> `HTTP`, `Server`),
    and letter<->digit (`utf8Decode` -> `utf`, `8`, `Decode`). Returns [] when `name` holds no
    letters or digits.
    """
    parts: list[str] = []
    for word in _WORD.findall(name):
        start = -1
        n = len(word)
        for i, ch in enumerate(word):
            cls = _char_class(ch)
            if cls == 0:
                if start >= 0:
                    parts.append(word[start:i])
                    start = -1
                continue
            if start < 0:
                start = i
                continue
            prev = _char_class(word[i - 1])
            boundary = (
                (prev == 2 and cls == 1)
                or (prev == 3) != (cls == 3)
                or (prev == 1 and cls == 1 and i + 1 < n and _char_class(word[i + 1]) == 2)
            )
            if boundary:
                parts.append(word[start:i])
                start = i
        if start >= 0:
            parts.append(word[start:])
    return parts


@lru_cache(maxsize=1 << 16)
def _word_terms(word: str) -> tuple[str, ...]:
    """The word itself (lowercased) followed by its parts when it has more than one.

    Cached: source code repeats the same identifiers endlessly, and this runs on every word of
    every chunk at indexing time.
    """
    whole = word.lower()
    if word.isascii():
        if word.isalpha() and (word.islower() or word.isupper()):
            return (whole,)  # `self`, `return`, `NULL`: nothing to split
        cjk: list[str] = []
    else:
        cjk = _cjk_bigrams(word)
    parts = [p.lower() for p in split_identifier(word)]
    if len(parts) <= 1 and (not parts or parts[0] == whole):
        parts = []
    return (whole, *parts, *(c for c in cjk if c != whole))


def _cjk_bigrams(word: str) -> list[str]:
    """Overlapping character pairs of each CJK run of `word` (a lone character as itself)."""
    out: list[str] = []
    for run in _CJK_RUN.findall(word):
        if len(run) == 1:
            out.append(run)
        else:
            out.extend(run[i : i + 2] for i in range(len(run) - 1))
    return out


@lru_cache(maxsize=1 << 16)
def _model_word(word: str) -> str:
    """One word as the model should read it: an ASCII identifier with more than one part
    becomes its parts separated by spaces (`getConnectionPool` -> `get Connection Pool`,
    `parse_config` -> `parse config`); anything else stays as it is."""
    if not word.isascii() or (word.isalpha() and (word.islower() or word.isupper())):
        return word
    parts = split_identifier(word)
    return " ".join(parts) if len(parts) > 1 else word


def model_text(text: str) -> str:
    """Text with its identifiers split into words, for the embedding model.

    all-MiniLM-L6-v2 learnt English sentences: its word pieces for `getConnectionPool` or
    `parse_config` (`get`, `##con`, `##ne`..., `_`) carry little of what it knows of "get",
    "connection" and "pool". Chunks and queries go through this same function, so both sides
    of the cosine agree. Punctuation, spacing and line breaks are kept.
    """
    return _WORD.sub(lambda m: _model_word(m.group(0)), text)


def index_terms(text: str) -> str:
    """Text for an FTS5 column: every word lowercased, followed by its parts when it splits.

    `parseConfig(x)` -> `parseconfig parse config x`; `HttpClient.send` ->
    `httpclient http client send`; `__init__` -> `__init__ init`; a run of CJK characters adds
    its character pairs (`日本語` -> `日本語 日本 本語`). Non-word characters vanish,
    non-ASCII words are kept (lowercased with str.lower; the FTS5 tokenizer folds case and
    diacritics itself, so this is for readability, not correctness). The result is
    space-separated, for an FTS5 tokenizer configured with tokenchars '_'.
    """
    out: list[str] = []
    for word in _WORD.findall(text):
        out.extend(_word_terms(word))
    return " ".join(out)


def query_words(query: str) -> list[str]:
    """Distinct lowercase terms of a query, in first-seen order, stopwords removed.

    Each word contributes itself and its parts (`parse_config` -> `parse_config`, `parse`,
    `config`). Stopwords are removed unless they are all the query has. At most
    MAX_QUERY_TERMS terms are returned.
    """
    terms: list[str] = []
    seen: set[str] = set()
    for word in _WORD.findall(query):
        for term in _word_terms(word):
            # A term made only of '_' is nothing the tokenizer would index.
            if term not in seen and term.strip("_"):
                seen.add(term)
                terms.append(term)
    content = [t for t in terms if t not in _STOPWORDS]
    return (content or terms)[:MAX_QUERY_TERMS]


def _quote(term: str) -> str:
    """An FTS5 string literal: double quotes, inner quotes doubled (FTS5 query syntax)."""
    return '"' + term.replace('"', '""') + '"'


def query_terms(query: str) -> str:
    """An FTS5 MATCH expression for a user query, or "" when the query has no searchable words.

    Every term is quoted (so `AND`, `NEAR`, `*`, `:`, `-` and quotes in user input are plain
    text, never FTS5 syntax) and the terms are joined with OR: BM25 then ranks chunks holding
    more, and rarer, terms first. The exact identifier is kept next to its parts, so a chunk
    containing `parse_config` itself outranks one that only mentions `parse` and `config`.
    """
    return " OR ".join(_quote(t) for t in query_words(query))


def parse_identifier(query: str) -> str | None:
    """The identifier a query consists of, or None when the query is not a bare identifier.

    Accepts `name`, dotted / `::` / `#` / `->` paths (`HttpClient.send`, `std::vector`) and a
    trailing `()`. Plain words count too (`main`); the caller decides how much that means.
    Separators are normalised to `.` so the result compares with stored symbols
    (`HttpClient.send`).
    """
    match = _IDENTIFIER_QUERY.match(query)
    if match is None:
        return None
    return _IDENTIFIER_SEPARATORS.sub(".", match.group(1))
