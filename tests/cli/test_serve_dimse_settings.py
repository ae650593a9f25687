"""``[layers.dimse]`` of mmarchive.toml: the DIMSE AE title, port, accepted calling AEs and C-MOVE
destinations that ``mmarchive serve`` uses, checked when read; a real serve process honours them."""

from __future__ import annotations

import re
import signal
import threading
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE, evt

from mmarchive.config import ArchiveConfig
from mmarchive.dicom.dimse.settings import DimseSettings, dimse_settings
from mmarchive.errors import InvalidInputError
from tests.cli.conftest import run_cli, start_serve
from tests.dicom.synthetic import ct_file

VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"


def _settings(table: dict[str, Any]) -> DimseSettings:
    return dimse_settings(ArchiveConfig(layers={"dimse": table}), "a/mmarchive.toml")


def test_defaults_without_a_table() -> None:
    settings = dimse_settings(ArchiveConfig())
    assert settings == DimseSettings("MMARCHIVE", None, None, {})


def test_a_full_table_is_read() -> None:
    settings = _settings({"ae_title": "REGION_PACS", "port": 11112, "allowed_calling_aes": ["CT1", "VIEWER "],
                          "move_destinations": {"VIEWER": "10.0.0.7:104", "BACKUP": "[::1]:11113"}})
    assert settings.ae_title == "REGION_PACS" and settings.port == 11112
    assert settings.allowed_calling_aes == frozenset({"CT1", "VIEWER"})
    assert settings.move_destinations == {"VIEWER": ("10.0.0.7", 104), "BACKUP": ("::1", 11113)}


@pytest.mark.parametrize(("table", "says"), [
    ({"aetitle": "X"}, "unknown keys ['aetitle']"),
    ({"ae_title": "A" * 17}, "ae_title"),
    ({"ae_title": 5}, "must be a string"),
    ({"port": 70000}, "port number from 0 to 65535"),
    ({"port": "104"}, "port number"),
    ({"allowed_calling_aes": []}, "non-empty list"),
    ({"allowed_calling_aes": "CT1"}, "non-empty list"),
    ({"allowed_calling_aes": ["BAD\\AE"]}, "allowed calling AE"),
    ({"move_destinations": ["VIEWER"]}, "table of TITLE"),
    ({"move_destinations": {"VIEWER": "10.0.0.7"}}, '"host:port"'),
    ({"move_destinations": {"VIEWER": "10.0.0.7:0"}}, "needs its real port"),
    ({"move_destinations": {"": "10.0.0.7:104"}}, "move destination"),
])
def test_bad_tables_are_refused_naming_the_file_and_key(table: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        _settings(table)
    assert "a/mmarchive.toml [layers.dimse]" in str(caught.value)
    assert says in str(caught.value)


def test_serve_runs_dimse_as_configured(tmp_path: Path) -> None:
    """Port 0 in the table starts DIMSE without --dimse; only the listed calling AE is accepted; C-MOVE
    sends to the configured destination (a pynetdicom storage SCP run here) and nowhere else."""
    received: list[bytes] = []
    got_one = threading.Event()

    def on_store(event: Any) -> int:
        received.append(event.request.DataSet.getvalue())
        got_one.set()
        return 0x0000

    destination = AE(ae_title="DEST")
    destination.add_supported_context(CT_IMAGE_STORAGE, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    scp = destination.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert scp is not None
    archive = tmp_path / "archive"
    try:
        assert run_cli("init", "--archive", archive).code == 0
        with (archive / "mmarchive.toml").open("a") as toml:
            toml.write('\n[layers.dimse]\nae_title = "CONFARCH"\nport = 0\n'
                       'allowed_calling_aes = ["GOODSCU"]\n'
                       f'move_destinations = {{ DEST = "127.0.0.1:{scp.server_address[1]}" }}\n')
        proc, line = start_serve(archive)
        try:
            found = re.search(r"DIMSE as CONFARCH on 127\.0\.0\.1:(\d+)", line)
            assert found is not None, line
            port = int(found.group(1))

            stranger = AE(ae_title="BADSCU")
            stranger.add_requested_context(VERIFICATION)
            refused = stranger.associate("127.0.0.1", port, ae_title="CONFARCH")
            assert refused.is_rejected

            data = ct_file(patient_id="CONFIGURED")
            sent = pydicom.dcmread(BytesIO(data))
            scu = AE(ae_title="GOODSCU")
            scu.add_requested_context(VERIFICATION)
            scu.add_requested_context(CT_IMAGE_STORAGE)
            scu.add_requested_context(STUDY_ROOT_MOVE)
            assoc = scu.associate("127.0.0.1", port, ae_title="CONFARCH")
            assert assoc.is_established
            assert assoc.send_c_echo().Status == 0x0000
            assert assoc.send_c_store(sent).Status == 0x0000
            query = pydicom.Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = sent.StudyInstanceUID
            move = STUDY_ROOT_MOVE
            statuses = [s.Status for s, _ in assoc.send_c_move(query, "DEST", move) if s]
            assert statuses[-1] == 0x0000
            unknown = [s.Status for s, _ in assoc.send_c_move(query, "ELSEWHERE", move) if s]
            assert unknown[-1] == 0xA801  # move destination unknown
            assoc.release()
        finally:
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err.decode()
    finally:
        scp.shutdown()
    assert got_one.is_set() and len(received) == 1
    moved = pydicom.dcmread(BytesIO(received[0]), force=True)
    assert moved.SOPInstanceUID == sent.SOPInstanceUID and moved.PatientID == "CONFIGURED"


def test_serve_refuses_a_bad_table_with_the_error_exit(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    assert run_cli("init", "--archive", archive).code == 0
    with (archive / "mmarchive.toml").open("a") as toml:
        toml.write('\n[layers.dimse]\nport = 104\nmove_destinations = { VIEWER = "nowhere" }\n')
    result = run_cli("serve", "--archive", archive, "--http", "127.0.0.1:0")
    assert result.code == 2, result.stderr
    assert "[layers.dimse]" in result.stderr and "host:port" in result.stderr
