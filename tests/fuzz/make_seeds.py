"""Writes the seed corpora of the fuzz harnesses into tests/fuzz/corpus/<harness>/.

The seeds are small valid (or nearly valid) inputs that reach deep into each parser; libFuzzer
mutates them. Deterministic: rerunning rewrites the same files. Usage:
    python tests/fuzz/make_seeds.py [--out tests/fuzz/corpus]
"""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path

# The tiny model of tests/fuzz/fuzz_common.h: H=4, 2 heads, I=8, P=4, T=2, 1 layer, V=8.
TINY_CONFIG = {
    "hidden_act": "gelu",
    "hidden_size": 4,
    "intermediate_size": 8,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 4,
    "num_attention_heads": 2,
    "num_hidden_layers": 1,
    "type_vocab_size": 2,
    "vocab_size": 8,
    "position_embedding_type": "absolute",
}
TINY_VOCAB = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n##s\nx\n"
LAYER = "encoder.layer.0."
TENSORS: list[tuple[str, tuple[int, ...]]] = [
    ("embeddings.word_embeddings.weight", (8, 4)),
    ("embeddings.position_embeddings.weight", (4, 4)),
    ("embeddings.token_type_embeddings.weight", (2, 4)),
    ("embeddings.LayerNorm.weight", (4,)),
    ("embeddings.LayerNorm.bias", (4,)),
    *[
        (LAYER + f"attention.self.{part}.{kind}", (4, 4) if kind == "weight" else (4,))
        for part in ("query", "key", "value")
        for kind in ("weight", "bias")
    ],
    (LAYER + "attention.output.dense.weight", (4, 4)),
    (LAYER + "attention.output.dense.bias", (4,)),
    (LAYER + "attention.output.LayerNorm.weight", (4,)),
    (LAYER + "attention.output.LayerNorm.bias", (4,)),
    (LAYER + "intermediate.dense.weight", (8, 4)),
    (LAYER + "intermediate.dense.bias", (8,)),
    (LAYER + "output.dense.weight", (4, 8)),
    (LAYER + "output.dense.bias", (4,)),
    (LAYER + "output.LayerNorm.weight", (4,)),
    (LAYER + "output.LayerNorm.bias", (4,)),
]


def encode_values(dtype: str, count: int) -> bytes:
    values = [(i % 13 - 6) / 8.0 for i in range(count)]  # exact in F16 and BF16
    if dtype == "F32":
        return struct.pack(f"<{count}f", *values)
    if dtype == "F16":
        return struct.pack(f"<{count}e", *values)
    return b"".join(struct.pack("<f", v)[2:] for v in values)  # BF16: high half of F32


def safetensors(
    dtype: str = "F32",
    prefix: str = "",
    legacy_norm: bool = False,
    pad: int = 0,
    metadata: bool = False,
    extra_i64: bool = False,
) -> bytes:
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {"format": "pt"}
    data = b""
    if extra_i64:
        header["embeddings.position_ids"] = {
            "dtype": "I64",
            "shape": [1, 4],
            "data_offsets": [0, 32],
        }
        data += struct.pack("<4q", 0, 1, 2, 3)
    for name, shape in TENSORS:
        if legacy_norm:
            name = name.replace("LayerNorm.weight", "LayerNorm.gamma")
            name = name.replace("LayerNorm.bias", "LayerNorm.beta")
        count = 1
        for d in shape:
            count *= d
        blob = encode_values(dtype, count)
        header[prefix + name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [len(data), len(data) + len(blob)],
        }
        data += blob
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-len(text)) % 8 + pad)
    return struct.pack("<Q", len(text)) + text + data


TOKENIZER_TEXTS: list[bytes] = [
    b"def hello_world(name: str) -> None:\n    print(f'Hello, {name}!')\n",
    b"The quick brown fox jumps over the lazy dog.",
    "Ünïcödé àccents, naïve café, Straße, İstanbul, ǅ".encode(),
    "中文字符和日本語のテキスト 한국어 텍스트".encode(),
    "emoji 😀👍🏽 and flags 🇫🇷 zero\u200bwidth".encode(),
    "combining a\u0301\u0316\u0300 e\u0327\u0306 o\u0308\u0304".encode(),
    b"[CLS] special [SEP] tokens [MASK] [PAD] [UNK] [cls] [SEP",
    b"invalid \xff\xfe utf-8 \xc0\xaf overlong \xed\xa0\x80 surrogate \xf4\x90\x80\x80 \xe2\x82",
    b"control\x00chars\x01\x7f\t\r\n\x0b\x0c and \xc2\x85 nel",
    b"x" * 150,
    b"antidisestablishmentarianism supercalifragilisticexpialidocious",
    "ﬁ ligature ǈ titlecase ΣΑΣ final sigma ᾼ".encode(),
    b"a.b,c;d:e!f?g(h)i[j]k{l}m<n>o/p\\q|r~s`t@u#v$w%x^y&z*",
]


def write_corpus(out: Path) -> dict[str, int]:
    written: dict[str, int] = {}

    st = out / "safetensors"
    st.mkdir(parents=True, exist_ok=True)
    variants = {
        "f32": safetensors("F32"),
        "f16": safetensors("F16"),
        "bf16": safetensors("BF16"),
        "bert_prefix_metadata": safetensors("F32", prefix="bert.", metadata=True),
        "legacy_gamma_beta": safetensors("F32", legacy_norm=True),
        "misaligned_f32": safetensors("F32", pad=2, extra_i64=True),
    }
    for name, blob in variants.items():
        (st / name).write_bytes(blob)
    written["safetensors"] = len(variants)

    config = out / "config"
    config.mkdir(parents=True, exist_ok=True)
    real_config = {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_size": 384,
        "intermediate_size": 1536,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512,
        "model_type": "bert",
        "num_attention_heads": 12,
        "num_hidden_layers": 6,
        "position_embedding_type": "absolute",
        "type_vocab_size": 2,
        "use_cache": True,
        "vocab_size": 30522,
    }
    configs = {
        "config_tiny": b"\x00" + json.dumps(TINY_CONFIG, indent=2).encode(),
        "config_minilm": b"\x00" + json.dumps(real_config, indent=2).encode(),
        "sentence_bert": b"\x01" + b'{\n  "max_seq_length": 256,\n  "do_lower_case": false\n}',
        "tokenizer_config": b"\x02"
        + b'{"do_lower_case": true, "unk_token": "[UNK]", "strip_accents": null,'
        b' "never_split": null, "model_max_length": 512}',
        "vocab_tiny": b"\x03" + TINY_VOCAB.encode(),
        "vocab_crlf_dupes": b"\x03[PAD]\r\n[UNK]  \r\n[CLS]\n[SEP]\nthe\n##s\nthe\n\n##\n",
        "json_escapes": b"\x00"
        + b'{"s": "a\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00", "n": [-0, 1.5e-3, 1E+2,'
        b' 9223372036854775807, -9223372036854775808, 1e400], "t": true, "f": false,'
        b' "z": null, "o": {"a": {"b": [[], {}]}}}',
    }
    for name, blob in configs.items():
        (config / name).write_bytes(blob)
    written["config"] = len(configs)

    tok = out / "tokenizer"
    tok.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(TOKENIZER_TEXTS):
        # Option byte: lowercase/cased alternate, no repetition, truncation limits vary.
        (tok / f"text{i:02d}").write_bytes(bytes([(i & 1) | ((i * 4) & 0xFC)]) + text)
    (tok / "repeated_word").write_bytes(b"\x02abc")
    (tok / "repeated_marks").write_bytes(b"\x02\xcc\x81\xcc\x96")
    # Lowercase: spacing marks that survive accent stripping, out of canonical order.
    marks = "a\U0001d16d\U0001d165\u302e\u1734b \uac00\u302f\u0301"
    (tok / "reordered_marks").write_bytes(b"\x00" + marks.encode())
    written["tokenizer"] = len(TOKENIZER_TEXTS) + 3
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "corpus")
    args = parser.parse_args()
    written = write_corpus(args.out)
    print(json.dumps({"out": str(args.out), "seeds": written}))


if __name__ == "__main__":
    main()
