"""``mmarchive lifecycle plan|run``: show what the lifecycle policy would do, and do it.

``plan`` is a dry run over the whole archive (read-only, no writer lock): packs to move and why, objects to
expire or kept by legal holds, packs gc would repack, bytes per tier before and after, and with ``--days N``
what becomes due day by day over the next N days. ``run`` makes the same plan and carries it out with a
progress bar (:func:`mmarchive.lifecycle.runner.run_plan`): resumable and idempotent, ``--rate`` caps the
copy rate. Both use the archive's policy unless ``--policy FILE`` names another.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table
from rich.text import Text

from mmarchive.archive import Archive
from mmarchive.cli.session import (
    Output,
    Subparsers,
    add_command,
    human_size,
    key_value_table,
    open_archive,
)
from mmarchive.lifecycle.guard import load_policy
from mmarchive.lifecycle.policy import Policy
from mmarchive.lifecycle.runner import Plan, make_plan, run_plan

_MiB = 1024 * 1024
_SHOWN = 50  # rows of each list in the human output (all of them with --json)


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "lifecycle", help="plan and run moves between tiers and expiry",
        description="Apply the archive's lifecycle policy (docs/lifecycle.md): move packs to colder tiers, "
                    "expire data whose retention has ended, move least recently used data off full tiers.")
    commands = parser.add_subparsers(dest="lifecycle_command", metavar="SUBCOMMAND", required=True)
    plan = add_command(commands, "plan", summary="show what a run would do (dry run)", tenant=False,
                       description="Show what `lifecycle run` would move, expire and repack now, and with "
                                   "--days N what becomes due over the next N days; bytes per tier before "
                                   "and after. Changes nothing.")
    _policy_option(plan)
    plan.add_argument("--days", metavar="N", type=_days, default=0,
                      help="also show what becomes due over the next N days")
    plan.set_defaults(run=run_plan_cmd)
    run = add_command(commands, "run", summary="carry out the plan", tenant=False,
                      description="Finish interrupted moves, expire what the policy lets go (unless held), "
                                  "move packs (copy, verify, switch), repack with gc. Safe to stop and "
                                  "run again.")
    _policy_option(run)
    run.add_argument("--rate", metavar="MB/S", type=float, default=None,
                     help="copy at most this many MB (10^6 bytes) per second on average")
    run.add_argument("--user", metavar="U", default=None, help="who runs it, for the audit log")
    run.set_defaults(run=run_run_cmd)


def _policy_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", metavar="FILE", type=Path, default=None,
                        help="a policy file to use instead of the archive's own")


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 36_600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days (0..36600)")
    return value


def _policy(archive: Archive, args: argparse.Namespace) -> Policy:
    if args.policy is None:
        return archive.lifecycle.policy
    return load_policy(archive.path, archive.config.lifecycle, archive.tiers.names, args.policy)


def run_plan_cmd(args: argparse.Namespace, out: Output) -> int:
    with open_archive(args, readonly=True) as archive:
        plan = make_plan(archive, _policy(archive, args), horizon_days=args.days)
    if out.json_mode:
        out.emit(plan.to_json())
    else:
        show_plan(plan, out)
    return 0


def run_run_cmd(args: argparse.Namespace, out: Output) -> int:
    with open_archive(args, readonly=False) as archive:
        plan = make_plan(archive, _policy(archive, args))
        total = len(plan.expiries) + len(plan.moves) + len(plan.replicas) + (1 if plan.repacks else 0)
        with out.progress("lifecycle", total) as bar:
            report = run_plan(archive, plan, actor=args.user,
                              rate_bytes_s=args.rate * 1e6 if args.rate else None,
                              progress=lambda done, n, note: bar(done, n, note=note))
    if out.json_mode:
        out.emit(report.to_json())
    else:
        out.table(key_value_table([
            ("unfinished moves", ", ".join(f"{k} {v}" for k, v in report.moves_finished.items())),
            ("expired", f"{report.expired} objects, {human_size(report.expired_bytes)}"),
            ("refused", str(len(report.refused))),
            ("moved", f"{report.moved} packs, {human_size(report.moved_bytes)}"),
            ("replicas", f"{report.replicated} made ({human_size(report.replicated_bytes)}), "
                         f"{report.replicas_dropped} dropped"),
            ("failed", str(len(report.failed))),
            ("repacked or deleted packs", str(report.repacked)),
            ("time", f"{report.seconds:.1f} s"),
        ]))
        for text in report.refused + report.failed:
            out.note(text)
    return 1 if report.failed else 0


def show_plan(plan: Plan, out: Output) -> None:
    tiers = Table(box=None, pad_edge=False, header_style="bold", title="bytes per tier", title_justify="left")
    for col in ("TIER", "NOW", "AFTER"):
        tiers.add_column(col, justify="left" if col == "TIER" else "right")
    for name, before in plan.tiers_before.items():
        tiers.add_row(name, human_size(before), human_size(plan.tiers_after.get(name, 0)))
    out.table(tiers)
    out.table(key_value_table([
        ("objects examined", str(plan.objects)),
        ("packs to move", f"{len(plan.moves)} ({human_size(plan.move_bytes)})"),
        ("objects to expire", f"{len(plan.expiries)} ({human_size(plan.expire_bytes)})"),
        ("kept by legal holds", str(len(plan.held))),
        ("packs to repack", str(len(plan.repacks))),
        ("replicas to make / drop", f"{sum(not r.drop for r in plan.replicas)} / "
                                    f"{sum(r.drop for r in plan.replicas)}"),
        ("unfinished moves", str(plan.unfinished_moves)),
        ("over capacity after", ", ".join(plan.over_capacity) or "none"),
    ]))
    if plan.moves:
        moves = Table(box=None, pad_edge=False, header_style="bold", title="moves", title_justify="left")
        for col in ("PACK", "TENANT", "GROUP", "FROM", "TO", "SIZE", "OBJECTS", "WHY"):
            moves.add_column(col, no_wrap=True)
        for m in plan.moves[:_SHOWN]:
            why = f"rule {m.rule}" if m.cause == "policy" else f"{m.rule} over high water"
            moves.add_row(m.pack, m.tenant, Text(m.group), m.source, m.target, human_size(m.bytes),
                          str(m.objects), Text(why + (" (sealed first)" if m.seal else "")))
        out.table(moves)
    if plan.expiries:
        exp = Table(box=None, pad_edge=False, header_style="bold", title="expiries", title_justify="left")
        for col in ("OBJECT", "TENANT", "SIZE", "RULE", "RETAINED UNTIL"):
            exp.add_column(col, no_wrap=True)
        for e in plan.expiries[:_SHOWN]:
            exp.add_row(e.object_id, e.tenant, human_size(e.size), e.rule, e.retained_until or "")
        out.table(exp)
    if plan.upcoming:
        up = Table(box=None, pad_edge=False, header_style="bold",
                   title=f"due over the next {plan.horizon_days} days", title_justify="left")
        for col in ("DAY", "OBJECTS TO MOVE", "BYTES", "OBJECTS TO EXPIRE", "BYTES"):
            up.add_column(col, justify="left" if col == "DAY" else "right")
        for u in plan.upcoming:
            up.add_row(u.day, str(u.move_objects), human_size(u.move_bytes), str(u.expire_objects),
                       human_size(u.expire_bytes))
        out.table(up)
    shown = max(len(plan.moves), len(plan.expiries))
    if shown > _SHOWN:
        out.note(f"showing the first {_SHOWN} of each list; --json lists all")
