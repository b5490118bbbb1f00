#!/usr/bin/env python3
"""Generate csrc/cx_unicode_tables.h, the character tables of the WordPiece tokenizer.

Every table comes from Python's unicodedata; nothing is typed by hand except the list of CJK
ranges, which is a definition of BERT's, not a Unicode property. The tokenizer must give the
same ids as Hugging Face `tokenizers` (BertNormalizer + BertPreTokenizer), and that library
mixes Unicode versions: its category tests (control, punctuation, nonspacing mark) come from an
old crate, its lowercase mapping from a recent Rust standard library. So, unless
--no-reference is given, the script also asks the installed `tokenizers` about every code
point, adopts its answer where it differs from unicodedata (the differences are listed in the
JSON summary and counted in the header), and then checks that normalizing each code point
through the generated tables gives exactly what `tokenizers` gives.

Prints a JSON summary on stdout (and writes it to --json when given).

The generated header holds, per code point, one record: flags, canonical combining class, full
canonical decomposition (Hangul syllables excepted: the tokenizer decomposes them
algorithmically) and full lowercase mapping, reached through a two-level table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import unicodedata
from pathlib import Path
from typing import Any, NamedTuple

MAX_CODE_POINT = 0x110000
HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3

FLAG_CONTROL = 1  # dropped by clean_text: Cc, Cf, Co except \t \n \r
FLAG_WHITESPACE = 2  # Unicode White_Space: becomes ' ' and separates words
FLAG_PUNCTUATION = 4  # ASCII punctuation or any P* category: a word of its own
FLAG_CJK = 8  # CJK ideograph: padded with spaces, so a word of its own
FLAG_MARK = 16  # nonspacing mark (Mn): removed after NFD when stripping accents

# BERT's "Chinese character" ranges as `tokenizers` writes them. Note 0x2B920, where the original
# BERT code has 0x2B820: `tokenizers` does not pad U+2B820..U+2B91F and we follow it.
CJK_RANGES = [
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
]


class Properties(NamedTuple):
    control: set[int]
    whitespace: set[int]
    punctuation: set[int]
    cjk: set[int]
    mark: set[int]
    lowercase: dict[int, tuple[int, ...]]  # only code points that change
    undecomposed: set[int]  # have an NFD in unicodedata but not in `tokenizers` (newer)


def code_points() -> range:
    return range(MAX_CODE_POINT)


def is_surrogate(cp: int) -> bool:
    return 0xD800 <= cp <= 0xDFFF


def decomposition(
    cp: int, undecomposed: set[int] | frozenset[int] = frozenset()
) -> tuple[int, ...]:
    """Full canonical decomposition (NFD of the lone character)."""
    if is_surrogate(cp) or cp in undecomposed:
        return (cp,)
    return tuple(ord(c) for c in unicodedata.normalize("NFD", chr(cp)))


def base_properties() -> Properties:
    """The tables as Python's unicodedata defines them."""
    control, whitespace, punctuation, cjk, mark = set(), set(), set(), set(), set()
    lowercase: dict[int, tuple[int, ...]] = {}
    for cp in code_points():
        c = chr(cp)
        category = unicodedata.category(c)
        if category in ("Cc", "Cf", "Co") and c not in "\t\n\r":
            control.add(cp)
        # White_Space = Zs + Zl + Zp + U+0009..U+000D + U+0085 (what Rust's is_whitespace tests)
        if category in ("Zs", "Zl", "Zp") or 0x09 <= cp <= 0x0D or cp == 0x85:
            whitespace.add(cp)
        if (
            33 <= cp <= 47
            or 58 <= cp <= 64
            or 91 <= cp <= 96
            or 123 <= cp <= 126
            or category.startswith("P")
        ):
            punctuation.add(cp)
        if any(low <= cp <= high for low, high in CJK_RANGES):
            cjk.add(cp)
        if category == "Mn":
            mark.add(cp)
        if not is_surrogate(cp):
            lower = c.lower()
            if lower != c:
                lowercase[cp] = tuple(ord(x) for x in lower)
    return Properties(control, whitespace, punctuation, cjk, mark, lowercase, set())


class Reference:
    """The components of `tokenizers`' BERT pipeline, one behaviour at a time."""

    def __init__(self) -> None:
        import tokenizers
        from tokenizers import normalizers, pre_tokenizers

        self.version = tokenizers.__version__

        def bert(**flags: bool) -> Any:
            options = {
                "clean_text": False,
                "handle_chinese_chars": False,
                "strip_accents": False,
                "lowercase": False,
            }
            options.update(flags)
            return normalizers.BertNormalizer(**options)

        self.clean = bert(clean_text=True)
        self.cjk = bert(handle_chinese_chars=True)
        self.strip = bert(strip_accents=True)
        self.lower = bert(lowercase=True)
        self.full = {
            True: normalizers.BertNormalizer(lowercase=True),
            False: normalizers.BertNormalizer(lowercase=False),
        }
        self.pre = pre_tokenizers.BertPreTokenizer()

    def properties(self, base: Properties) -> Properties:
        names = ("control", "whitespace", "punctuation", "cjk", "mark")
        sets: dict[str, set[int]] = {name: set() for name in names}
        lowercase: dict[int, tuple[int, ...]] = {}
        for cp in code_points():
            if is_surrogate(cp):  # a Rust string cannot hold one; keep unicodedata's answer
                for name in names:
                    if cp in getattr(base, name):
                        sets[name].add(cp)
                continue
            c = chr(cp)
            if self.clean.normalize_str(c) == "" and cp != 0xFFFD:
                sets["control"].add(cp)
            words = [w for w, _ in self.pre.pre_tokenize_str("a" + c + "b")]
            if words == ["a", "b"]:
                sets["whitespace"].add(cp)
            elif words == ["a", c, "b"]:
                sets["punctuation"].add(cp)
            if self.cjk.normalize_str(c) == " " + c + " ":
                sets["cjk"].add(cp)
            if decomposition(cp) != (cp,):  # never seen undecomposed when stripping
                if cp in base.mark:
                    sets["mark"].add(cp)
            elif self.strip.normalize_str(c) == "":
                sets["mark"].add(cp)
            lower = self.lower.normalize_str(c)
            if lower != c:
                lowercase[cp] = tuple(ord(x) for x in lower)
        # Decompositions newer than `tokenizers`' normalization crate: it leaves those alone.
        undecomposed = {
            cp
            for cp in code_points()
            if not is_surrogate(cp)
            and decomposition(cp) != (cp,)
            and self.strip.normalize_str(chr(cp)) == chr(cp)
        }
        return Properties(
            sets["control"],
            sets["whitespace"],
            sets["punctuation"],
            sets["cjk"],
            sets["mark"],
            lowercase,
            undecomposed,
        )


def normalize_one(cp: int, props: Properties, lowercase: bool) -> str:
    """What the C tokenizer does to a lone code point, written with the tables it will get."""
    if cp in (0, 0xFFFD) or cp in props.control:
        return ""
    if cp in props.whitespace:
        return " "
    if not lowercase:
        out = [cp]
    else:
        out = []
        for d in decomposition(cp, props.undecomposed):
            if d not in props.mark:
                out.extend(props.lowercase.get(d, (d,)))
    text = "".join(chr(x) for x in out)
    return " " + text + " " if cp in props.cjk else text


def differences(base: set[int], ref: set[int]) -> dict[str, list[int]]:
    return {"added": sorted(ref - base), "removed": sorted(base - ref)}


def reconcile(base: Properties, reference: Reference) -> tuple[Properties, dict[str, Any]]:
    ref = reference.properties(base)
    report: dict[str, Any] = {}
    for name in ("control", "whitespace", "punctuation", "cjk", "mark"):
        diff = differences(getattr(base, name), getattr(ref, name))
        report[name] = {k: [f"U+{cp:04X}" for cp in v] for k, v in diff.items()}
    changed = sorted(
        cp
        for cp in set(base.lowercase) | set(ref.lowercase)
        if base.lowercase.get(cp) != ref.lowercase.get(cp)
    )
    report["lowercase"] = {"changed": [f"U+{cp:04X}" for cp in changed]}
    report["decomposition"] = {"removed": [f"U+{cp:04X}" for cp in sorted(ref.undecomposed)]}
    return ref, report


def verify(props: Properties, reference: Reference) -> list[str]:
    """Every code point normalized through the tables must equal `tokenizers`' result."""
    failures: list[str] = []
    for cp in code_points():
        if is_surrogate(cp):
            continue
        for lowercase in (True, False):
            expected = reference.full[lowercase].normalize_str(chr(cp))
            got = normalize_one(cp, props, lowercase)
            if got != expected and len(failures) < 20:
                failures.append(f"U+{cp:04X} lowercase={lowercase}: {got!r} != {expected!r}")
    return failures


def check_invariants(props: Properties) -> None:
    """Facts the C code relies on; see cx_tokenizer.c."""
    for cp in code_points():
        if is_surrogate(cp):
            continue
        ccc = unicodedata.combining(chr(cp))
        if ccc and cp not in props.mark:
            # A surviving combining mark never ends a word, so sorting a bounded run of them is
            # enough: a run longer than the buffer already makes its word [UNK].
            for x in (cp, *props.lowercase.get(cp, ())):
                if x in props.whitespace or x in props.punctuation or x in props.cjk:
                    raise SystemExit(f"U+{cp:04X}: combining mark that splits words")
        if cp not in props.control and cp not in props.whitespace:
            # At most one id per input byte: a buffer of length + 2 ids always suffices.
            produced = len(normalize_one(cp, props, True).strip())
            if produced > len(chr(cp).encode("utf-8")):
                raise SystemExit(f"U+{cp:04X}: normalizes to more characters than UTF-8 bytes")
    for cp in range(128):
        if unicodedata.combining(chr(cp)) or decomposition(cp, props.undecomposed) != (cp,):
            raise SystemExit(f"U+{cp:04X}: ASCII fast path assumption broken")
        lower = props.lowercase.get(cp, (cp,))
        if lower != ((cp + 32,) if 65 <= cp <= 90 else (cp,)):
            raise SystemExit(f"U+{cp:04X}: ASCII lowercase is not A-Z + 32")


class Tables(NamedTuple):
    shift: int
    stage1: list[int]
    stage2: list[int]
    records: list[tuple[int, int, int, int, int, int]]
    pool: list[int]


def build_tables(props: Properties) -> Tables:
    records: dict[tuple[Any, ...], int] = {(0, 0, (), ()): 0}
    per_cp: list[int] = []
    for cp in code_points():
        flags = 0
        flags |= FLAG_CONTROL if cp in props.control else 0
        flags |= FLAG_WHITESPACE if cp in props.whitespace else 0
        flags |= FLAG_PUNCTUATION if cp in props.punctuation else 0
        flags |= FLAG_CJK if cp in props.cjk else 0
        flags |= FLAG_MARK if cp in props.mark else 0
        ccc = 0 if is_surrogate(cp) else unicodedata.combining(chr(cp))
        decomp = decomposition(cp, props.undecomposed)
        if decomp == (cp,) or HANGUL_FIRST <= cp <= HANGUL_LAST:
            decomp = ()
        key = (flags, ccc, decomp, props.lowercase.get(cp, ()))
        per_cp.append(records.setdefault(key, len(records)))
    if len(records) > 0xFFFF:
        raise SystemExit("too many distinct records for uint16 indices")

    pool: list[int] = []
    record_rows = []
    for flags, ccc, decomp, lower in records:
        decomp_at = len(pool)
        pool.extend(decomp)
        lower_at = len(pool)
        pool.extend(lower)
        record_rows.append((flags, ccc, len(decomp), len(lower), decomp_at, lower_at))
    if len(pool) > 0xFFFF:
        raise SystemExit("pool too large for uint16 offsets")

    best: Tables | None = None
    for shift in (5, 6, 7, 8):
        size = 1 << shift
        blocks: dict[tuple[int, ...], int] = {}
        stage1 = []
        for start in range(0, MAX_CODE_POINT, size):
            block = tuple(per_cp[start : start + size])
            stage1.append(blocks.setdefault(block, len(blocks)))
        stage2 = [r for block in blocks for r in block]
        tables = Tables(shift, stage1, stage2, record_rows, pool)
        if best is None or table_bytes(tables) < table_bytes(best):
            best = tables
    assert best is not None
    return best


def table_bytes(t: Tables) -> int:
    return 2 * len(t.stage1) + 2 * len(t.stage2) + 8 * len(t.records) + 4 * len(t.pool)


def c_array(values: list[int], per_line: int, width: int) -> str:
    lines = []
    for i in range(0, len(values), per_line):
        chunk = values[i : i + per_line]
        lines.append(
            "    " + ", ".join(f"{v:#0{width}x}" if width else str(v) for v in chunk) + ","
        )
    return "\n".join(lines)


def render(t: Tables, props: Properties, summary: dict[str, Any]) -> str:
    ascii_flags = [t.records[t.stage2[(t.stage1[0] << t.shift) + cp]][0] for cp in range(128)]
    records = "\n".join(
        f"    {{{f}, {c}, {dl}, {ll}, {da}, {la}}}," for f, c, dl, ll, da, la in t.records
    )
    overrides = summary.get("reference_overrides", {})
    counts = (
        ", ".join(
            f"{name} {sum(len(v) for v in diff.values())}" for name, diff in overrides.items()
        )
        or "none (generated with --no-reference)"
    )
    return f"""\
/* cx_unicode_tables.h: character tables of the WordPiece tokenizer. GENERATED by
 * scripts/gen_unicode_tables.py from Python {summary["python"]} unicodedata {summary["unicodedata"]}
 * reconciled with tokenizers {summary.get("tokenizers") or "(not used)"}; do not edit.
 *
 * Code points where `tokenizers` disagrees with unicodedata (the tables follow `tokenizers`):
 * {counts}.
 *
 * Lookup: record = cx_unicode_records[cx_unicode_stage2[(cx_unicode_stage1[cp >> SHIFT] << SHIFT)
 * + (cp & MASK)]]. Included by cx_tokenizer.c only. */
#ifndef COARCH_CX_UNICODE_TABLES_H
#define COARCH_CX_UNICODE_TABLES_H

#include <stdint.h>

#define CX_UNICODE_CONTROL {FLAG_CONTROL}     /* dropped: Cc, Cf, Co but \\t \\n \\r */
#define CX_UNICODE_WHITESPACE {FLAG_WHITESPACE}  /* White_Space: becomes ' ', ends a word */
#define CX_UNICODE_PUNCTUATION {FLAG_PUNCTUATION} /* a word of its own */
#define CX_UNICODE_CJK {FLAG_CJK}         /* padded with spaces: a word of its own */
#define CX_UNICODE_MARK {FLAG_MARK}       /* Mn: removed after NFD when lowercasing */

#define CX_UNICODE_SHIFT {t.shift}
#define CX_UNICODE_MASK {(1 << t.shift) - 1}

typedef struct cx_unicode_record {{
    uint8_t flags;                /* CX_UNICODE_* bits */
    uint8_t combining_class;      /* canonical combining class (ccc) */
    uint8_t decomposition_length; /* 0: the code point is its own NFD */
    uint8_t lowercase_length;     /* 0: the code point is its own lowercase */
    uint16_t decomposition;       /* offset in cx_unicode_pool of the full NFD */
    uint16_t lowercase;           /* offset in cx_unicode_pool of the lowercase mapping */
}} cx_unicode_record;

/* Flags of the ASCII characters, for the fast path. */
static const uint8_t cx_unicode_ascii_flags[128] = {{
{c_array(ascii_flags, 16, 0)}
}};

static const uint16_t cx_unicode_stage1[{len(t.stage1)}] = {{
{c_array(t.stage1, 16, 0)}
}};

static const uint16_t cx_unicode_stage2[{len(t.stage2)}] = {{
{c_array(t.stage2, 16, 0)}
}};

static const cx_unicode_record cx_unicode_records[{len(t.records)}] = {{
{records}
}};

static const uint32_t cx_unicode_pool[{max(1, len(t.pool))}] = {{
{c_array(t.pool or [0], 8, 6)}
}};

#endif
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "csrc" / "cx_unicode_tables.h",
        help="header to write (default: %(default)s)",
    )
    parser.add_argument("--json", type=Path, help="also write the JSON summary to this file")
    parser.add_argument(
        "--no-reference",
        action="store_true",
        help="use unicodedata alone, without reconciling with `tokenizers`",
    )
    args = parser.parse_args(argv)

    summary: dict[str, Any] = {
        "python": platform.python_version(),
        "unicodedata": unicodedata.unidata_version,
    }
    props = base_properties()
    if not args.no_reference:
        try:
            reference = Reference()
        except ImportError:
            print(
                "gen_unicode_tables: error: `tokenizers` is not installed "
                "(hint: pip install tokenizers, or pass --no-reference)",
                file=sys.stderr,
            )
            return 2
        summary["tokenizers"] = reference.version
        props, summary["reference_overrides"] = reconcile(props, reference)
        failures = verify(props, reference)
        if failures:
            print(
                "gen_unicode_tables: error: tables disagree with tokenizers:\n  "
                + "\n  ".join(failures),
                file=sys.stderr,
            )
            return 1
    check_invariants(props)
    tables = build_tables(props)
    args.output.write_text(render(tables, props, summary))
    summary.update(
        output=str(args.output),
        records=len(tables.records),
        stage2_blocks=len(tables.stage2) >> tables.shift,
        pool=len(tables.pool),
        shift=tables.shift,
        table_bytes=table_bytes(tables),
    )
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
