"""Builds coarch._core: C engine files plus the C++ bridge to libtorch (encoder and backend).

By default it links Debian's libtorch (package libtorch-dev: headers in /usr/include, libraries
in the multiarch directory). COARCH_LIBTORCH=/path/to/libtorch (a folder with include/ and lib/,
as inside a pip-installed torch) builds against another libtorch, for example a CUDA one.
COARCH_SANITIZE=address,undefined builds with those sanitizers; COARCH_WERROR=1 turns warnings
into errors (CI sets it).
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import numpy  # noqa: F401  (build requirement; the core uses the buffer protocol, not its C API)
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent

# Explicit source list: engine files (plain C, no Python.h), bridge files, the libtorch bridge
# (C++ only where libtorch demands it).
C_SOURCES = [
    "csrc/cx_error.c",
    "csrc/cx_json.c",
    "csrc/cx_config.c",
    "csrc/cx_model.c",
    "csrc/cx_tokenizer.c",
    "csrc/cx_threads.c",
    "csrc/cx_footprint.c",
    "csrc/cx_sysmem.c",
    "csrc/cx_memory.c",
    "csrc/cx_encode.c",
    "csrc/cx_rows.c",
    "csrc/module.c",
    "csrc/embedder_type.c",
    "csrc/tokenizer_type.c",
    "csrc/memory_type.c",
]
CXX_SOURCES = ["csrc/cx_bert.cpp", "csrc/cx_backend.cpp"]

# -fopenmp-simd: the `omp simd` reduction pragmas of the kernels only, no OpenMP runtime.
# -ffp-contract=fast: a * b + c may become one FMA, as outside ISO mode; -std=c11 turns it off
# and the attention kernel's products ran as separate multiplies and adds.
C_FLAGS = ["-std=c11", "-D_GNU_SOURCE", "-fopenmp-simd", "-ffp-contract=fast"]
# -fopenmp: ATen's at::parallel_for is a header template that runs its body on one thread
# unless the including file is built with OpenMP (libtorch's own pool is libgomp's).
CXX_FLAGS = ["-std=c++17", "-D_GLIBCXX_USE_CXX11_ABI=1", "-fopenmp"]
COMMON_FLAGS = ["-O3", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter"]


def libtorch_paths() -> tuple[list[str], list[str]]:
    """Include and library directories of the libtorch to build against."""
    custom = os.environ.get("COARCH_LIBTORCH")
    if custom:
        base = Path(custom)
        includes = [base / "include", base / "include" / "torch" / "csrc" / "api" / "include"]
        return [str(p) for p in includes], [str(base / "lib")]
    multiarch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    return ["/usr/include/torch/csrc/api/include"], [f"/usr/lib/{multiarch}"]


def sanitize_flags() -> list[str]:
    wanted = os.environ.get("COARCH_SANITIZE", "").strip()
    if not wanted:
        return []
    return [f"-fsanitize={wanted}", "-fno-omit-frame-pointer", "-g", "-O1"]


class BuildCore(build_ext):
    """Compiles .c and .cpp files with their own flags: gcc rejects -std=c++17 on a .c file."""

    def build_extension(self, ext: Extension) -> None:
        werror = ["-Werror"] if os.environ.get("COARCH_WERROR") else []
        original_compile = self.compiler._compile

        def compile_one(obj, src, ext_name, cc_args, extra_postargs, pp_opts):  # type: ignore[no-untyped-def]
            language_flags = CXX_FLAGS if src.endswith(".cpp") else C_FLAGS
            postargs = COMMON_FLAGS + language_flags + werror + sanitize_flags()
            # libtorch's own headers warn under -Wextra; keep -Werror for our C files only.
            if src.endswith(".cpp"):
                postargs = [f for f in postargs if f != "-Werror"]
            original_compile(obj, src, ext_name, cc_args, postargs, pp_opts)

        self.compiler._compile = compile_one
        try:
            super().build_extension(ext)
        finally:
            self.compiler._compile = original_compile


def cuda_settings(library_dirs: list[str]) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """Macros, libraries and include folders for a libtorch built with CUDA: decided at build
    time by the presence of libc10_cuda.so next to libtorch. CUDA's headers come from
    CUDA_HOME (default /usr/local/cuda)."""
    if not any((Path(d) / "libc10_cuda.so").exists() for d in library_dirs):
        return [], [], []
    cuda_home = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    return [("COARCH_WITH_CUDA", "1")], ["c10_cuda", "torch_cuda"], [str(cuda_home / "include")]


include_dirs, library_dirs = libtorch_paths()
cuda_macros, cuda_libraries, cuda_includes = cuda_settings(library_dirs)
rpath = [] if not os.environ.get("COARCH_LIBTORCH") else library_dirs

core = Extension(
    "coarch._core",
    sources=C_SOURCES + CXX_SOURCES,
    include_dirs=["csrc", *include_dirs, *cuda_includes],
    define_macros=cuda_macros,
    library_dirs=library_dirs,
    runtime_library_dirs=rpath,
    depends=sorted(f"csrc/{p.name}" for p in (ROOT / "csrc").glob("*.h*")),
    libraries=["torch_cpu", "c10", *cuda_libraries, "dl"],
    extra_link_args=["-Wl,--as-needed", "-fopenmp"] + sanitize_flags(),
    language="c++",
)

setup(ext_modules=[core], cmdclass={"build_ext": BuildCore})
