"""Fixtures for the CLI tests: run ``mmarchive`` in a subprocess or in-process, on tiny archives.

Tiny archives (chunking from 16 KiB, 4-32 KiB chunks, 64 KiB packs) reach the chunk and pack edges with a
few hundred KiB of data. ``MMARCHIVE_ARCHIVE`` and ``XDG_DATA_HOME`` are cleared so no test can touch the
user's default archive by accident.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mmarchive.cli.main import main

TINY_INIT = ["--pack-size", "64KiB", "--chunk-threshold", "16KiB", "--chunk-min", "4KiB",
             "--chunk-avg", "8KiB", "--chunk-max", "32KiB"]


@dataclass(frozen=True)
class Result:
    code: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode()

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.decode().splitlines()]


def cli_env(archive: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MMARCHIVE_ARCHIVE", "XDG_DATA_HOME")}
    if archive is not None:
        env["MMARCHIVE_ARCHIVE"] = str(archive)
    env["HOME"] = env.get("HOME", "/nonexistent")
    return env


def run_cli(*args: str | Path, input: bytes | None = None, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Result:
    """Run ``python -m mmarchive.cli.main ARGS`` with stdout and stderr piped."""
    proc = subprocess.run([sys.executable, "-m", "mmarchive.cli.main", *map(str, args)],
                          input=input if input is not None else b"", capture_output=True,
                          env=env if env is not None else cli_env(), cwd=cwd, timeout=120)
    return Result(proc.returncode, proc.stdout, proc.stderr.decode())


class InProcess:
    """Calls ``main(argv)`` in this process and captures what it prints (text output only)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def __call__(self, *args: str | Path) -> Result:
        self._capsys.readouterr()
        code = main([str(a) for a in args])
        captured = self._capsys.readouterr()
        return Result(code, captured.out.encode(), captured.err)


@pytest.fixture
def mm(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> InProcess:
    monkeypatch.delenv("MMARCHIVE_ARCHIVE", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    return InProcess(capsys)


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    """A new tiny archive, made by ``mmarchive init``."""
    path = tmp_path / "archive"
    result = run_cli("init", "--archive", path, *TINY_INIT)
    assert result.code == 0, result.stderr
    return path


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    """Three input files: small, chunked (several chunks, more than one pack), and empty."""
    src = tmp_path / "src"
    src.mkdir()
    contents = {"small.txt": b"hello, archive\n", "big.bin": os.urandom(150_000), "empty": b""}
    paths = []
    for name, data in contents.items():
        p = src / name
        p.write_bytes(data)
        paths.append(p)
    return paths


def start_serve(archive: Path, *args: str,
                stdout: int = subprocess.PIPE) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``mmarchive serve --archive ARCHIVE --http 127.0.0.1:0 ARGS``; return the process and the first
    line it writes on stderr (the one showing where it listens). The caller stops the process."""
    proc = subprocess.Popen([sys.executable, "-m", "mmarchive.cli.main", "serve", "--archive", str(archive),
                             "--http", "127.0.0.1:0", *args],
                            stdout=stdout, stderr=subprocess.PIPE, env=cli_env())
    assert proc.stderr is not None
    return proc, proc.stderr.readline().decode()
