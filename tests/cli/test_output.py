"""Output rules: progress bars only on a terminal, human sizes, the default archive path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmarchive.cli.session import default_archive_dir, human_size
from tests.cli.conftest import cli_env, run_cli


def _many_files(tmp_path: Path, n: int = 30) -> list[Path]:
    src = tmp_path / "many"
    src.mkdir()
    paths = []
    for i in range(n):
        p = src / f"f{i:03}"
        p.write_bytes(os.urandom(3000 + i))
        paths.append(p)
    return paths


def test_piped_output_has_no_escape_codes(archive_dir: Path, tmp_path: Path) -> None:
    paths = _many_files(tmp_path)
    for args in (["put", *paths], ["put", "--json", *paths], ["verify"], ["gc"], ["reindex"], ["ls"],
                 ["stat"]):
        result = run_cli(*args, "--archive", archive_dir)
        assert result.code == 0, (args, result.stderr)
        assert b"\x1b" not in result.stdout, args
        assert "\x1b" not in result.stderr, args
        assert "\r" not in result.stderr, args


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_progress_bar_on_a_terminal_keeps_stdout_clean(archive_dir: Path, tmp_path: Path) -> None:
    paths = _many_files(tmp_path)
    for args in (["put", "--json", *paths], ["verify", "--json"]):
        master, slave = os.openpty()
        env = dict(cli_env(archive_dir), TERM="xterm-256color", COLUMNS="100")
        env.pop("NO_COLOR", None)
        proc = subprocess.run([sys.executable, "-m", "mmarchive.cli.main", *map(str, args)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env,
                              timeout=120)
        os.close(slave)
        terminal = b""
        try:
            while chunk := os.read(master, 65536):
                terminal += chunk
        except OSError:  # EIO once the child's side is closed
            pass
        os.close(master)
        assert proc.returncode == 0, terminal
        assert b"\x1b[" in terminal, args  # the bar was drawn on the terminal (stderr)
        assert b"\x1b" not in proc.stdout, args  # and nothing of it reached the piped stdout
    assert b'"id"' in subprocess.run([sys.executable, "-m", "mmarchive.cli.main", "ls", "--json"],
                                     capture_output=True, env=cli_env(archive_dir)).stdout


def test_human_size() -> None:
    assert human_size(0) == "0 B"
    assert human_size(1023) == "1023 B"
    assert human_size(1024) == "1.0 KiB"
    assert human_size(1536 * 1024) == "1.5 MiB"
    assert human_size(5 * 1024**4) == "5.0 TiB"


def test_default_archive_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_archive_dir({"MMARCHIVE_ARCHIVE": "/srv/a"}) == Path("/srv/a")
    assert default_archive_dir({"MMARCHIVE_ARCHIVE": "/srv/a", "XDG_DATA_HOME": "/x"}) == Path("/srv/a")
    assert default_archive_dir({"XDG_DATA_HOME": "/data"}) == Path("/data/mmarchive/archive")
    assert default_archive_dir({"XDG_DATA_HOME": "relative"}) == \
        tmp_path / ".local" / "share" / "mmarchive" / "archive"
    assert default_archive_dir({}) == tmp_path / ".local" / "share" / "mmarchive" / "archive"
    assert default_archive_dir({"MMARCHIVE_ARCHIVE": ""}) == \
        tmp_path / ".local" / "share" / "mmarchive" / "archive"


def test_default_archive_used_by_the_commands(tmp_path: Path) -> None:
    env = cli_env()
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    assert run_cli("init", env=env).code == 0
    assert (tmp_path / "xdg" / "mmarchive" / "archive" / "mmarchive.toml").exists()
    assert run_cli("stat", env=env).code == 0
    env.pop("XDG_DATA_HOME")
    env["HOME"] = str(tmp_path / "home")
    missing = run_cli("ls", env=env)
    assert missing.code == 3
    assert str(tmp_path / "home" / ".local" / "share" / "mmarchive" / "archive") in missing.stderr
