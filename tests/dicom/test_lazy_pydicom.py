"""pydicom is imported only when a file needs it: the CLI, the catalog and the native ingest path start
without it (it takes about half of the command's start-up), and the fallback still works."""

from __future__ import annotations

import subprocess
import sys

from tests.dicom.synthetic import ct_file

_CHECK = """
import sys
import mmarchive.cli.main, mmarchive.dicom.store
from mmarchive.dicom.scan import describe
scanned = describe(sys.stdin.buffer.read())
assert scanned.parsed_by == "native", scanned.parsed_by
loaded = sorted(m for m in sys.modules if m == "pydicom" or m.startswith("pydicom."))
print(",".join(loaded))
"""


def test_cli_and_native_scan_do_not_import_pydicom() -> None:
    done = subprocess.run([sys.executable, "-c", _CHECK], input=ct_file(), capture_output=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == ""


def test_the_pydicom_fallback_is_imported_when_needed() -> None:
    check = _CHECK.replace('assert scanned.parsed_by == "native", scanned.parsed_by',
                           'from mmarchive.dicom.scan import describe_with_pydicom\n'
                           'assert describe_with_pydicom(ct_bytes).parsed_by == "pydicom"')
    check = check.replace("scanned = describe(sys.stdin.buffer.read())", "ct_bytes = sys.stdin.buffer.read()")
    done = subprocess.run([sys.executable, "-c", check], input=ct_file(), capture_output=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert "pydicom" in done.stdout.decode().split(",")
