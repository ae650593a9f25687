"""``mmarchive ingest``, ``query`` and ``export`` on real and synthetic DICOM files, in-process and piped."""

from __future__ import annotations

import json
from pathlib import Path

from pydicom.uid import generate_uid

from tests.cli.conftest import InProcess, run_cli
from tests.dicom.synthetic import ct_file
from tests.dicom.testfiles import pydicom_test_files


def _study(folder: Path, n: int = 4, *, patient_id: str = "PID-7", accession: str = "ACC-7") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    for i in range(n):
        (folder / f"{i}.dcm").write_bytes(ct_file(study_uid=study, series_uid=series, instance_number=i + 1,
                                                  patient_id=patient_id, accession=accession))
    return study


def test_ingest_reports_each_file_and_a_summary_and_fails_on_bad_files(
        mm: InProcess, archive_dir: Path, tmp_path: Path) -> None:
    _study(tmp_path / "in" / "study")
    (tmp_path / "in" / "notes.txt").write_text("not DICOM")
    result = mm("ingest", "--archive", archive_dir, "--json", tmp_path / "in")
    assert result.code == 2
    lines = result.json_lines()
    files, summary = lines[:-2], lines[-2]
    assert [line["status"] for line in files] == ["failed"] + ["stored"] * 4
    assert "not a DICOM file" in files[0]["error"]
    assert summary["summary"]["stored"] == 4 and summary["summary"]["failed"] == 1
    assert "error" in lines[-1]  # the command's own failure line
    again = mm("ingest", "--archive", archive_dir, "--json", tmp_path / "in" / "study")
    assert again.code == 0
    assert [line["status"] for line in again.json_lines()[:-1]] == ["already-stored"] * 4


def test_query_and_export_round_trip(mm: InProcess, archive_dir: Path, tmp_path: Path) -> None:
    study = _study(tmp_path / "in", 3, patient_id="QX-1", accession="ACC-QX")
    assert mm("ingest", "--archive", archive_dir, tmp_path / "in").code == 0
    found = mm("query", "--archive", archive_dir, "--json", "PatientID=QX-1")
    assert found.code == 0
    [hit] = json.loads(found.text)
    assert hit["0020000D"]["Value"] == [study]
    assert hit["00201208"]["Value"] == [3]
    table = mm("query", "--archive", archive_dir, "AccessionNumber=ACC-Q*")
    assert study in table.text
    series = mm("query", "--archive", archive_dir, "--json", "--level", "instance",
                f"StudyInstanceUID={study}", "--limit", "2")
    assert len(json.loads(series.text)) == 2
    bad = mm("query", "--archive", archive_dir, "Modality=CT")  # a series attribute at study level
    assert bad.code == 2 and "series-level" in bad.stderr
    out = tmp_path / "out"
    exported = mm("export", "--archive", archive_dir, "--study", study, "-o", out)
    assert exported.code == 0
    written = sorted(p.read_bytes() for p in out.rglob("*.dcm"))
    assert written == sorted(p.read_bytes() for p in (tmp_path / "in").iterdir())
    missing = mm("export", "--archive", archive_dir, "--study", generate_uid(), "-o", out)
    assert missing.code == 3


def test_ingest_of_pydicoms_test_files_through_a_pipe(archive_dir: Path) -> None:
    folder = pydicom_test_files()[0].parent
    result = run_cli("ingest", "--archive", archive_dir, folder)
    assert result.code == 2  # pydicom's folder holds non-DICOM and truncated files
    assert "were not stored" in result.stderr
    assert "stored" in result.text and "failed" in result.text
    assert "inst/s" in result.stderr  # the summary line


def test_query_before_any_ingest_says_so(mm: InProcess, archive_dir: Path) -> None:
    result = mm("query", "--archive", archive_dir, "PatientID=X")
    assert result.code == 3 and "nothing was ingested" in result.stderr
