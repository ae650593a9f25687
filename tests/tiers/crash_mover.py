"""A process that moves packs between an archive's tiers until it is killed with SIGKILL (tests only).

Run as ``python tests/tiers/crash_mover.py ARCHIVE SEED LOG``. It opens the archive for writing (which
finishes or rolls back moves an earlier kill interrupted), then loops: pick a sealed pack and another tier
at random, move it there with a grace period of 0 or 50 ms, now and then finish moves past their grace.
Each step is logged to the append-only LOG: ``r`` once the archive is open, ``m PACK TIER`` before a move,
``M PACK TIER`` after it returned, ``f`` / ``F`` around finish_moves.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

from mmarchive.archive import Archive


def main() -> None:
    root, seed, log_path = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rng = random.Random(seed)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def log(line: str) -> None:
        os.write(fd, (line + "\n").encode())

    with Archive.open(root) as archive:
        log("r")
        tiers = archive.tiers.names
        while True:
            busy = {m.pack for m in archive.pack_moves()}
            packs = [p for p in archive.packs() if p.sealed and p.id not in busy]
            if not packs:
                archive.finish_moves()
                continue
            pack = rng.choice(packs)
            target = rng.choice([t for t in tiers if t != pack.tier])
            log(f"m {pack.id} {target}")
            archive.move_pack(pack.id, target, grace_s=rng.choice([0.0, 0.05]))
            log(f"M {pack.id} {target}")
            if rng.random() < 0.2:
                log("f")
                archive.finish_moves()
                log("F")


if __name__ == "__main__":
    main()
