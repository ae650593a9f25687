"""Build the Cython extensions in native/ into the mmarchive package.

Cython is a build requirement (pyproject.toml), so `pip install .` compiles these on a machine with a C
compiler; the package refuses to import without them (see mmarchive/_native/__init__.py).
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

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
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
)
