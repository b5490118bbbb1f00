"""coarch.identifiers: identifier splitting, FTS5 index text and safe MATCH expressions.

The FTS5 checks run against a real SQLite FTS5 table declared with the tokenizer the store uses
(Porter over unicode61, tokenchars '_'), so "safe" and "matches" mean what SQLite says they mean.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coarch.identifiers import (
    MAX_QUERY_TERMS,
    index_terms,
    model_text,
    parse_identifier,
    query_terms,
    query_words,
    split_identifier,
)
from coarch.store.schema import FTS_TOKENIZER


@pytest.fixture()
def fts() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:")
    conn.execute(f'CREATE VIRTUAL TABLE t USING fts5(body, tokenize = "{FTS_TOKENIZER}")')
    yield conn
    conn.close()


def matching_rows(conn: sqlite3.Connection, query: str) -> list[int]:
    expr = query_terms(query)
    if not expr:
        return []
    rows = conn.execute("SELECT rowid FROM t WHERE t MATCH ? ORDER BY rank", (expr,)).fetchall()
    return [r[0] for r in rows]


def insert_rows(conn: sqlite3.Connection, rows: list[tuple[int, str]]) -> None:
    """Each (rowid, source text) indexed as the store indexes a chunk's body."""
    for rowid, text in rows:
        conn.execute("INSERT INTO t(rowid, body) VALUES (?, ?)", (rowid, index_terms(text)))


# --- split_identifier -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("parse_config", ["parse", "config"]),
        ("parseConfig", ["parse", "Config"]),
        ("ParseConfig", ["Parse", "Config"]),
        ("HTTPServer", ["HTTP", "Server"]),
        ("getHTTPResponseCode", ["get", "HTTP", "Response", "Code"]),
        ("XMLHttpRequest2", ["XML", "Http", "Request", "2"]),
        ("utf8Decode", ["utf", "8", "Decode"]),
        ("__init__", ["init"]),
        ("MAX_QUERY_TERMS", ["MAX", "QUERY", "TERMS"]),
        ("HttpClient.send", ["Http", "Client", "send"]),
        ("std::vector", ["std", "vector"]),
        ("café_auLait", ["café", "au", "Lait"]),
        ("x", ["x"]),
        ("_", []),
        ("", []),
        ("->", []),
    ],
)
def test_split_identifier_examples(name: str, parts: list[str]) -> None:
    assert split_identifier(name) == parts


identifier_chars = st.characters(
    categories=("Lu", "Ll", "Lo", "Nd"), include_characters="_", max_codepoint=0x2FFF
)


@given(st.text(identifier_chars, min_size=1, max_size=40))
def test_split_identifier_partitions_the_word(word: str) -> None:
    parts = split_identifier(word)
    # The parts are the word's characters, in order, with the underscores removed.
    assert "".join(parts) == word.replace("_", "")
    assert all(part and "_" not in part for part in parts)


# Words of two letters or more: `aAA` is `a` + `AA` (an acronym), not `a` + `a` + `a`.
@given(st.lists(st.from_regex(r"[a-z]{2,8}", fullmatch=True), min_size=1, max_size=5))
def test_split_identifier_snake_and_camel_agree(words: list[str]) -> None:
    snake = "_".join(words)
    camel = words[0] + "".join(w.capitalize() for w in words[1:])
    assert [p.lower() for p in split_identifier(snake)] == words
    assert [p.lower() for p in split_identifier(camel)] == words


# --- index_terms ------------------------------------------------------------------------------


def test_index_terms_keeps_identifier_and_adds_parts() -> None:
    text = "def parseConfig(path):\n    return HttpClient.send(MAX_SIZE)"
    assert index_terms(text) == (
        "def parseconfig parse config path return httpclient http client send max_size max size"
    )


def test_index_terms_plain_words_are_not_repeated() -> None:
    assert index_terms("self.value = None") == "self value none"


def test_index_terms_non_ascii() -> None:
    assert index_terms("def grüße(straße): # Ünïcödé") == "def grüße straße ünïcödé"


def test_index_terms_cjk_runs_add_character_pairs() -> None:
    assert index_terms("# 日本語 x") == "日本語 日本 本語 x"
    assert index_terms("挨") == "挨"
    assert index_terms("get日本") == "get日本 日本"


def test_cjk_query_matches_part_of_a_sentence(fts: sqlite3.Connection) -> None:
    fts.execute("INSERT INTO t(rowid, body) VALUES (1, ?)", (index_terms("日本語の挨拶も返す。"),))
    fts.execute("INSERT INTO t(rowid, body) VALUES (2, ?)", (index_terms("中文文本"),))
    assert matching_rows(fts, "挨拶") == [1]
    assert matching_rows(fts, "日本語の挨拶") == [1]


@given(st.text(max_size=300))
def test_index_terms_output_is_space_separated_tokens(text: str) -> None:
    out = index_terms(text)
    assert out == out.lower()
    assert out == "" or all(token and not token.isspace() for token in out.split(" "))


@given(st.text(st.characters(max_codepoint=0x7F), max_size=300))
def test_index_terms_ascii_output_is_lowercase_words(text: str) -> None:
    out = index_terms(text)
    assert out == "" or all(re.fullmatch(r"[a-z0-9_]+", token) for token in out.split(" "))


@given(st.lists(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True), max_size=20))
def test_index_terms_contains_every_word_and_part(words: list[str]) -> None:
    tokens = set(index_terms(" ".join(words)).split())
    for word in words:
        assert word.lower() in tokens
        assert {p.lower() for p in split_identifier(word)} <= tokens


# --- query_terms / query_words ----------------------------------------------------------------


def test_query_terms_quotes_and_ors_terms() -> None:
    assert query_terms("parse_config") == '"parse_config" OR "parse" OR "config"'
    assert query_terms("where are HTTP redirects followed?") == (
        '"http" OR "redirects" OR "followed"'
    )


def test_query_terms_stopwords_kept_when_nothing_else() -> None:
    assert query_words("the of") == ["the", "of"]
    assert query_words("the parser of") == ["parser"]


def test_query_terms_empty_for_punctuation() -> None:
    assert query_terms("") == ""
    assert query_terms("  ?!.()  ") == ""
    assert query_terms("___") == ""


def test_query_terms_caps_the_number_of_terms() -> None:
    query = " ".join(f"word{i}x" for i in range(500))
    assert len(query_words(query)) == MAX_QUERY_TERMS


def test_fts5_syntax_in_user_input_is_plain_text(fts: sqlite3.Connection) -> None:
    fts.execute("INSERT INTO t(rowid, body) VALUES (1, ?)", (index_terms("x NEAR y AND z"),))
    fts.execute("INSERT INTO t(rowid, body) VALUES (2, ?)", (index_terms("unrelated"),))
    for query in ["NEAR(x y)", "x AND", "body:x", '"x', "x*", "-x", "^x", "x OR", "(x"]:
        assert matching_rows(fts, query) == [1], query


def test_exact_identifier_outranks_its_parts(fts: sqlite3.Connection) -> None:
    rows = [
        (1, "config = parse(text)  # parse the config"),
        (2, "def parse_config(text): return load(text)"),
        (3, "def unrelated(): pass"),
    ]
    insert_rows(fts, rows)
    assert matching_rows(fts, "parse_config") == [2, 1]
    assert matching_rows(fts, "parseConfig")[0] in (1, 2)  # both hold `parse` and `config`
    assert matching_rows(fts, "configuration") == []


def test_description_words_meet_code_words_by_their_stem(fts: sqlite3.Connection) -> None:
    """A description says "retries", "uploads", "parsed"; the code says `retry_upload` and
    `parse`: the stemmer makes them one term on both sides."""
    rows = [
        (1, "def retry_upload(buffer):\n    return send(buffer)"),
        (2, "def parse(text): return tokens(text)"),
        (3, "def unrelated(): pass"),
    ]
    insert_rows(fts, rows)
    assert matching_rows(fts, "retries the uploads of buffers") == [1]
    assert matching_rows(fts, "the parsed tokens") == [2]
    assert matching_rows(fts, "retry_upload") == [1]  # the identifier itself still matches


def test_camel_case_query_finds_snake_case_code(fts: sqlite3.Connection) -> None:
    fts.execute(
        "INSERT INTO t(rowid, body) VALUES (1, ?)", (index_terms("def read_http_header(): ..."),)
    )
    fts.execute("INSERT INTO t(rowid, body) VALUES (2, ?)", (index_terms("class Other: ..."),))
    assert matching_rows(fts, "readHttpHeader") == [1]
    assert matching_rows(fts, "http header") == [1]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_query_is_a_valid_match_expression(query: str) -> None:
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(f'CREATE VIRTUAL TABLE t USING fts5(body, tokenize = "{FTS_TOKENIZER}")')
        conn.execute("INSERT INTO t(rowid, body) VALUES (1, ?)", (index_terms(query),))
        expr = query_terms(query)
        if expr:
            # Never an FTS5 syntax error, whatever the user typed.
            conn.execute("SELECT rowid FROM t WHERE t MATCH ?", (expr,)).fetchall()
    finally:
        conn.close()


@settings(max_examples=200, deadline=None)
@given(
    st.text(st.characters(categories=("L", "N", "P", "Zs")), max_size=60),
    st.text(identifier_chars, min_size=1, max_size=20),
)
def test_indexed_word_is_found_by_its_query(prefix: str, word: str) -> None:
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(f'CREATE VIRTUAL TABLE t USING fts5(body, tokenize = "{FTS_TOKENIZER}")')
        conn.execute("INSERT INTO t(rowid, body) VALUES (1, ?)", (index_terms(f"{prefix} {word}"),))
        expr = query_terms(word)
        if expr:
            rows = conn.execute("SELECT rowid FROM t WHERE t MATCH ?", (expr,)).fetchall()
            assert rows == [(1,)]
    finally:
        conn.close()


# --- parse_identifier -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("parse_config", "parse_config"),
        ("  HttpClient.send  ", "HttpClient.send"),
        ("std::vector", "std.vector"),
        ("os.path.join()", "os.path.join"),
        ("Foo#bar", "Foo.bar"),
        ("grüße", "grüße"),
        ("parse config", None),
        ("1abc", None),
        ("a.", None),
        ("", None),
        ("parse_config(x)", None),
    ],
)
def test_parse_identifier(query: str, expected: str | None) -> None:
    assert parse_identifier(query) == expected


# ---- model_text: what the embedding model reads ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("getConnectionPool", "get Connection Pool"),
        ("parse_config(path)", "parse config(path)"),
        ("HTTPServer.serve_forever()", "HTTP Server.serve forever()"),
        ("utf8Decode", "utf 8 Decode"),
        ("self.timeout = NULL", "self.timeout = NULL"),
        (
            "path: net/http_client.py\nsymbol: HttpClient.send\n",
            "path: net/http client.py\nsymbol: Http Client.send\n",
        ),
        ("retry a failed upload", "retry a failed upload"),
        ("café_crème", "café_crème"),  # non-ASCII words are left alone
        ("", ""),
    ],
)
def test_model_text_splits_identifiers_into_words(text: str, expected: str) -> None:
    assert model_text(text) == expected


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_model_text_keeps_lines_and_is_idempotent(text: str) -> None:
    once = model_text(text)
    assert once.count("\n") == text.count("\n")
    assert model_text(once) == once
