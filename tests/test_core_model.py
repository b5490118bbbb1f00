"""test_core_model.py: the C model loader (csrc/cx_model.c, csrc/cx_config.c and csrc/cx_json.c).

Model folders are written by hand in tmp_path: a tiny BERT (hidden 8, 2 heads, 1 layer,
intermediate 16, 16 positions, a 12-token vocab.txt) stored as safetensors with numpy. Valid
ones in F32, F16 and BF16, with and without the "bert." prefix, load and embed to the same
vectors. Broken ones (missing files, truncated or lying headers, a missing tensor, a wrong shape
or dtype) raise coarch.ModelError naming the file and the tensor. The plain C test program
(tests/c: JSON edge cases, every header lie, fuzzing) is built and run here too.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import coarch
from coarch import _core

HIDDEN, HEADS, INTERMEDIATE, POSITIONS, LAYERS = 8, 2, 16, 16, 1
VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "def",
    "class",
    "return",
    "x",
    "##s",
    "retry",
    "upload",
]
TEXTS = ["def retry upload", "class x", "", "return defs"]
QUERY = "encoder.layer.0.attention.self.query.weight"

Floats = npt.NDArray[np.float32]
Header = dict[str, Any]


def tiny_config(**changes: object) -> dict[str, object]:
    config: dict[str, object] = {
        "architectures": ["BertModel"],
        "hidden_act": "gelu",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": POSITIONS,
        "model_type": "bert",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "type_vocab_size": 2,
        "vocab_size": len(VOCAB),
    }
    config.update(changes)
    return config


def tiny_weights(prefix: str = "") -> dict[str, Floats]:
    """Every tensor of the tiny BERT. Values are multiples of 1/16 in [-0.5, 0.5], exact in F32,
    F16 and BF16, so all three dtypes must give the very same model."""
    rng = np.random.default_rng(7)
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (len(VOCAB), HIDDEN),
        "embeddings.position_embeddings.weight": (POSITIONS, HIDDEN),
        "embeddings.token_type_embeddings.weight": (2, HIDDEN),
        "embeddings.LayerNorm.weight": (HIDDEN,),
        "embeddings.LayerNorm.bias": (HIDDEN,),
    }
    for layer in range(LAYERS):
        base = f"encoder.layer.{layer}."
        for part in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ):
            shapes[base + part + ".weight"] = (HIDDEN, HIDDEN)
            shapes[base + part + ".bias"] = (HIDDEN,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[base + norm + ".weight"] = (HIDDEN,)
            shapes[base + norm + ".bias"] = (HIDDEN,)
        shapes[base + "intermediate.dense.weight"] = (INTERMEDIATE, HIDDEN)
        shapes[base + "intermediate.dense.bias"] = (INTERMEDIATE,)
        shapes[base + "output.dense.weight"] = (HIDDEN, INTERMEDIATE)
        shapes[base + "output.dense.bias"] = (HIDDEN,)
    return {
        prefix + name: (rng.integers(-8, 9, size=shape) / 16).astype(np.float32)
        for name, shape in shapes.items()
    }


def tensor_bytes(array: npt.NDArray[Any], dtype: str) -> bytes:
    if dtype == "F32":
        return array.astype("<f4").tobytes()
    if dtype == "F16":
        return array.astype("<f2").tobytes()
    if dtype == "BF16":  # the top half of each F32 (exact for these values)
        return (array.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
    if dtype == "I64":
        return array.astype("<i8").tobytes()
    raise ValueError(dtype)


def safetensors_image(
    weights: dict[str, npt.NDArray[Any]],
    dtype: str = "F32",
    lie: Callable[[Header], None] | None = None,
    header_pad: int = 0,
) -> bytes:
    """A safetensors file: 8-byte little-endian header length, JSON header, data. `lie` edits
    the header after the true offsets are filled in."""
    header: Header = {"__metadata__": {"format": "pt"}}
    chunks: list[bytes] = []
    offset = 0
    for name, array in weights.items():
        data = tensor_bytes(array, dtype)
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    if lie is not None:
        lie(header)
    text = json.dumps(header).encode()
    text += b" " * ((-len(text)) % 8 + header_pad)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def make_folder(
    folder: Path,
    weights: dict[str, npt.NDArray[Any]] | None = None,
    dtype: str = "F32",
    config: dict[str, object] | None = None,
    lie: Callable[[Header], None] | None = None,
    image: bytes | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or tiny_config()))
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    if image is None:
        image = safetensors_image(weights if weights is not None else tiny_weights(), dtype, lie)
    (folder / "model.safetensors").write_bytes(image)
    return folder


def load_error(folder: Path) -> str:
    with pytest.raises(coarch.ModelError) as caught:
        coarch.Embedder(model=str(folder), threads=1)
    return str(caught.value)


# ---------------------------------------------------------------------------------------------
# Valid models


@pytest.fixture(scope="module")
def reference_vectors(tmp_path_factory: pytest.TempPathFactory) -> Floats:
    folder = make_folder(tmp_path_factory.mktemp("f32"))
    vectors: Floats = coarch.Embedder(model=str(folder), threads=1).encode(TEXTS)
    return vectors


def test_tiny_f32_model_embeds(reference_vectors: Floats) -> None:
    assert reference_vectors.shape == (len(TEXTS), HIDDEN)
    assert reference_vectors.dtype == np.float32
    assert np.all(np.isfinite(reference_vectors))
    np.testing.assert_allclose(np.linalg.norm(reference_vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(reference_vectors[0], reference_vectors[1])


@pytest.mark.parametrize(
    ("dtype", "prefix"),
    [("F16", ""), ("BF16", ""), ("F32", "bert."), ("F16", "bert."), ("BF16", "bert.")],
)
def test_dtypes_and_prefix_give_the_same_model(
    tmp_path: Path, reference_vectors: Floats, dtype: str, prefix: str
) -> None:
    folder = make_folder(tmp_path / "m", tiny_weights(prefix), dtype)
    embedder = coarch.Embedder(model=str(folder), threads=1)
    assert embedder.dim == HIDDEN
    assert embedder.max_seq_length == POSITIONS
    np.testing.assert_allclose(embedder.encode(TEXTS), reference_vectors, rtol=0, atol=1e-6)


def test_extra_tensors_legacy_names_and_misaligned_data_load(
    tmp_path: Path, reference_vectors: Floats
) -> None:
    weights: dict[str, npt.NDArray[Any]] = {}
    for name, array in tiny_weights("bert.").items():
        weights[
            name.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
                "LayerNorm.bias", "LayerNorm.beta"
            )
        ] = array
    weights["bert.pooler.dense.weight"] = np.zeros((HIDDEN, HIDDEN), np.float32)
    folder = make_folder(tmp_path / "m", image=b"")
    # position_ids is I64 in real checkpoints: unused tensors of any dtype are fine. A header
    # padded to 8k + 1 bytes puts the F32 data at odd offsets, which the loader must copy.
    image = safetensors_image(weights, "F32")
    ids = tensor_bytes(np.arange(POSITIONS).reshape(1, -1), "I64")
    header_length = struct.unpack("<Q", image[:8])[0]
    header = json.loads(image[8 : 8 + header_length])
    data_size = len(image) - 8 - header_length
    header["embeddings.position_ids"] = {
        "dtype": "I64",
        "shape": [1, POSITIONS],
        "data_offsets": [data_size, data_size + len(ids)],
    }
    text = json.dumps(header).encode()
    text += b" " * ((-len(text)) % 8 + 1)
    (folder / "model.safetensors").write_bytes(
        struct.pack("<Q", len(text)) + text + image[8 + header_length :] + ids
    )
    embedder = coarch.Embedder(model=str(folder), threads=1)
    np.testing.assert_allclose(embedder.encode(TEXTS), reference_vectors, rtol=0, atol=1e-6)


def test_optional_configs(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "m")
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 1000}')
    assert coarch.Embedder(model=str(folder)).max_seq_length == POSITIONS  # clamped
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 6}')
    (folder / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    embedder = coarch.Embedder(model=str(folder))
    assert embedder.max_seq_length == 6
    assert embedder.tokenize("DEF def") == [2, 1, 5, 3]  # cased: "DEF" is unknown


def test_real_model_config() -> None:
    embedder = coarch.Embedder(model=str(coarch.default_model_path()), threads=1)
    assert embedder.dim == 384
    assert embedder.max_seq_length == 256


# ---------------------------------------------------------------------------------------------
# Broken models


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(coarch.ModelNotFoundError, match="model folder not found"):
        coarch.Embedder(model=str(missing))
    with pytest.raises(_core.ModelError) as caught:  # the core's own check, behind the Python one
        _core.Embedder(str(missing), precision="fp32")
    assert str(caught.value).startswith(f"model folder not found ({missing}): No such file")


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "vocab.txt"])
def test_missing_file(tmp_path: Path, name: str) -> None:
    folder = make_folder(tmp_path / "m")
    (folder / name).unlink()
    assert load_error(folder).startswith(f"model file not found ({folder / name}): ")


def _no_tensor(header: Header) -> None:
    del header[QUERY]


def _wrong_shape(header: Header) -> None:
    entry = header[QUERY]
    entry["shape"] = [HIDDEN, HIDDEN + 1]
    entry["data_offsets"][1] = entry["data_offsets"][0] + HIDDEN * (HIDDEN + 1) * 4


def _wrong_dtype(header: Header) -> None:
    header[QUERY]["dtype"] = "I64"


def _beyond_data(header: Header) -> None:
    header[QUERY]["data_offsets"] = [10**6, 10**6 + HIDDEN * HIDDEN * 4]


def _size_mismatch(header: Header) -> None:  # runs into the next tensor's bytes
    header[QUERY]["data_offsets"][1] += 64


def _reversed_offsets(header: Header) -> None:
    header[QUERY]["data_offsets"].reverse()


def _bad_entry(header: Header) -> None:
    header[QUERY] = {"dtype": "F32", "shape": [-8, 8], "data_offsets": [0, 256]}


LIES: dict[str, tuple[Callable[[Header], None], str]] = {
    "missing tensor": (_no_tensor, f"tensor is missing (model.safetensors: {QUERY}): "),
    "wrong shape": (
        _wrong_shape,
        f"tensor has the wrong shape (model.safetensors: {QUERY}): expected [8, 8], found [8, 9]",
    ),
    "wrong dtype": (
        _wrong_dtype,
        (
            f"tensor has an unsupported dtype (model.safetensors: {QUERY}): I64, expected F32, "
            "F16 or BF16"
        ),
    ),
    "offsets beyond the data": (
        _beyond_data,
        f"tensor data lies outside the file (model.safetensors: {QUERY}): ",
    ),
    "offsets overlap": (
        _size_mismatch,
        (
            f"tensor size does not match its shape (model.safetensors: {QUERY}): [8, 8] F32 needs "
            "256 bytes"
        ),
    ),
    "reversed offsets": (
        _reversed_offsets,
        f"tensor data lies outside the file (model.safetensors: {QUERY}): ",
    ),
    "malformed entry": (_bad_entry, f"bad tensor entry (model.safetensors: {QUERY}): "),
}


@pytest.mark.parametrize("case", list(LIES))
def test_lying_header(tmp_path: Path, case: str) -> None:
    lie, expected = LIES[case]
    assert load_error(make_folder(tmp_path / "m", lie=lie)).startswith(expected)


def test_lying_header_with_bert_prefix_names_the_file_tensor(tmp_path: Path) -> None:
    def lie(header: Header) -> None:
        header["bert." + QUERY]["shape"] = [HIDDEN * HIDDEN]

    folder = make_folder(tmp_path / "m", tiny_weights("bert."), lie=lie)
    assert load_error(folder).startswith(
        f"tensor has the wrong shape (model.safetensors: bert.{QUERY}): expected [8, 8], found [64]"
    )


def _valid_image() -> bytes:
    return safetensors_image(tiny_weights())


BROKEN_FILES: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty file": (lambda: b"", "truncated safetensors file (model.safetensors): 0 bytes"),
    "header length beyond the file": (
        lambda: struct.pack("<Q", 4096) + b'{"a": 1}',
        "truncated safetensors file (model.safetensors): header length 4096 but only 8 bytes",
    ),
    "absurd header length": (
        lambda: b"\xff" * 8 + _valid_image()[8:],
        "bad safetensors header (model.safetensors): header length 18446744073709551615",
    ),
    "garbage header": (
        lambda: struct.pack("<Q", 16) + b"\x00garbage-header!" + b"\x00" * 64,
        "invalid JSON (model.safetensors header): unexpected character at byte 0",
    ),
    "truncated data": (
        lambda: _valid_image()[:-100],
        "tensor data lies outside the file (model.safetensors: encoder.layer.0.output.",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN_FILES))
def test_broken_safetensors_file(tmp_path: Path, case: str) -> None:
    build, expected = BROKEN_FILES[case]
    assert load_error(make_folder(tmp_path / "m", image=build())).startswith(expected)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"num_attention_heads": 3},
            (
                "invalid model config (config.json): hidden_size 8 is not a multiple of "
                "num_attention_heads 3"
            ),
        ),
        ({"hidden_size": None}, "invalid model config (config.json): hidden_size is missing"),
        ({"vocab_size": -1}, "invalid model config (config.json): vocab_size is -1, expected 1 to"),
        ({"hidden_act": "relu"}, 'unsupported model (config.json): hidden_act is "relu"'),
    ],
)
def test_bad_config(tmp_path: Path, change: dict[str, object], expected: str) -> None:
    folder = make_folder(tmp_path / "m", config=tiny_config(**change))
    assert load_error(folder).startswith(expected)


def test_garbage_config(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "m")
    (folder / "config.json").write_text('{"hidden_size": 8,,}')
    assert (
        load_error(folder)
        == "invalid JSON (config.json): expected a string key in object at byte 18"
    )


# ---------------------------------------------------------------------------------------------
# The plain C tests


def test_c_program(tmp_path: Path) -> None:
    """Builds tests/c/test_model.c against the engine sources and runs it on the real model."""
    if shutil.which("make") is None or shutil.which("gcc") is None:
        pytest.skip("make and gcc are needed to build the C tests")
    tests_c = Path(__file__).parent / "c"
    result = subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(tests_c),
            f"BUILD={tmp_path}",
            "CC=gcc",
            f"MODEL_DIR={coarch.default_model_path()}",
            "check",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert ", 0 failures" in result.stdout
