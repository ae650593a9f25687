"""``mmarchive tiers``, ``lifecycle plan|run`` and ``rm`` under retention, on an archive with two tiers."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from mmarchive.archive import Archive
from tests.cli.conftest import run_cli
from tests.lifecycle.test_runner import config, put_study


def make_archive(tmp_path: Path) -> tuple[Path, list[str], list[str]]:
    root = tmp_path / "archive"
    with Archive.create(root, config(tmp_path)) as archive:
        adult = put_study(archive, "1.1", date(2010, 3, 1), date(1970, 1, 1))
        child = put_study(archive, "1.2", date(2010, 4, 1), date(2005, 6, 1))
        archive.seal_packs()
    return root, adult, child


def test_plan_run_and_tiers(tmp_path: Path) -> None:
    root, adult, child = make_archive(tmp_path)
    plan = run_cli("lifecycle", "plan", "--archive", root, "--days", "30", "--json")
    assert plan.code == 0, plan.stderr
    (body,) = plan.json_lines()
    assert body["totals"]["expire_objects"] == len(adult) and body["totals"]["move_packs"] >= 1
    human = run_cli("lifecycle", "plan", "--archive", root)
    assert human.code == 0 and "objects to expire" in human.text and "ct-10y-or-28" in human.text
    tiers = run_cli("tiers", "--archive", root, "--json")
    assert [t["name"] for t in tiers.json_lines()] == ["ssd", "disk"]
    assert tiers.json_lines()[1]["packs"] == 0

    done = run_cli("lifecycle", "run", "--archive", root, "--json", "--user", "ops")
    assert done.code == 0, done.stderr
    (report,) = done.json_lines()
    assert report["expired"] == len(adult) and report["moved"] >= 1 and not report["failed"]
    usage = {t["name"]: t for t in run_cli("tiers", "--archive", root, "--json").json_lines()}
    assert usage["disk"]["objects"] == len(child) and usage["ssd"]["objects"] == 0
    again = run_cli("lifecycle", "plan", "--archive", root, "--json").json_lines()[0]
    assert again["totals"]["move_packs"] == 0 and again["totals"]["expire_objects"] == 0
    audit = run_cli("audit", "--archive", root, "--json", "--action", "pack.move")
    assert audit.code == 0 and len(audit.json_lines()) == report["moved"]


def test_rm_is_refused_under_retention_and_hold(tmp_path: Path) -> None:
    root, _adult, child = make_archive(tmp_path)
    refused = run_cli("rm", child[0], "--archive", root, "--reason", "cleanup")
    assert refused.code == 6 and "ct-10y-or-28" in refused.stderr
    policy = tmp_path / "none.toml"
    policy.write_text("")  # a policy without rules: planning with it moves and expires nothing
    plan = run_cli("lifecycle", "plan", "--archive", root, "--json", "--policy", policy)
    assert plan.json_lines()[0]["totals"]["expire_objects"] == 0
    bad = run_cli("lifecycle", "plan", "--archive", root, "--policy", tmp_path / "missing.toml")
    assert bad.code == 2 and "missing.toml" in bad.stderr
