"""The real DICOM files the DICOM tests run over: pydicom's bundled test files and the pydicom-data package.

The files are listed from the two package directories directly. ``pydicom.data.get_testdata_files`` is not
used: with pydicom 3.0 and pydicom-data 1.0 it tries to download files from GitHub (hash mismatches), which
hangs for a minute without a network.
"""

from __future__ import annotations

from pathlib import Path

import pydicom

_SKIP_SUFFIXES = {".py", ".pyc", ".dump", ".json", ".txt", ".icc", ".gz"}


def pydicom_test_files() -> list[Path]:
    """The files under pydicom's ``data/test_files`` (DICOM or meant to be, malformed ones included)."""
    root = Path(pydicom.__file__).parent / "data" / "test_files"
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and p.suffix not in _SKIP_SUFFIXES and "__pycache__" not in p.parts)


def pydicom_data_files() -> list[Path]:
    """The larger files of the ``pydicom-data`` package (installed as the ``data_store`` module)."""
    import data_store  # type: ignore[import-untyped]  # the pydicom-data package

    root = Path(data_store.__file__).parent / "data"
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix not in _SKIP_SUFFIXES)


def all_test_files() -> list[Path]:
    return pydicom_test_files() + pydicom_data_files()
