"""Build the Cython extensions in native/ into the mmarchive package.

Cython is a build requirement (pyproject.toml), so `pip install .` compiles these on a machine with a C
compiler; the package refuses to import without them (see mmarchive/_native/__init__.py).
"""

import platform
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# The vendored BLAKE3 (native/blake3/, see its README): portable C, the run-time dispatcher and, on x86-64
# Unix, the SIMD code as assembly (no per-file -m flags needed); elsewhere the portable code alone.
BLAKE3_DIR = "native/blake3"
BLAKE3_SOURCES = [f"{BLAKE3_DIR}/blake3.c", f"{BLAKE3_DIR}/blake3_dispatch.c",
                  f"{BLAKE3_DIR}/blake3_portable.c"]
if platform.machine().lower() in ("x86_64", "amd64") and sys.platform != "win32":
    BLAKE3_SOURCES += [f"{BLAKE3_DIR}/blake3_{isa}_x86-64_unix.S"
                       for isa in ("sse2", "sse41", "avx2", "avx512")]
    BLAKE3_MACROS: list[tuple[str, str | None]] = []
else:
    BLAKE3_MACROS = [("BLAKE3_NO_SSE2", None), ("BLAKE3_NO_SSE41", None), ("BLAKE3_NO_AVX2", None),
                     ("BLAKE3_NO_AVX512", None), ("BLAKE3_USE_NEON", "0")]


class BuildExt(build_ext):
    """build_ext that also compiles assembly sources (.S, run through the C preprocessor by gcc)."""

    def build_extensions(self) -> None:
        if ".S" not in self.compiler.src_extensions:
            self.compiler.src_extensions.append(".S")
        super().build_extensions()


extensions = [
    Extension(
        "mmarchive._native.gearcdc",
        ["native/gearcdc.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "mmarchive._native.byteshuffle",
        ["native/byteshuffle.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "mmarchive._native.dicomscan",
        ["native/dicomscan.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "mmarchive._native.recordtuple",
        ["native/recordtuple.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "mmarchive._native.contentid",
        ["native/contentid.pyx", *BLAKE3_SOURCES],
        include_dirs=[BLAKE3_DIR],
        define_macros=BLAKE3_MACROS,
        extra_compile_args=["-O3"],
    ),
]

setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
)
