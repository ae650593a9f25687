"""mmarchive benchmark suite: synthetic medical-imaging data, raw limits and archive figures.

This package owns everything about measuring mmarchive's performance and nothing of the
engine itself: `ctdata` generates deterministic CT-like slices and small records, `limits`
measures what the machine can do with those bytes (fsync writes, hashing, zstd), `harness`
gives benchmark groups their settings, data sets, scratch folders and limits, `catalog` lists
the groups, `results` shows and saves the rows, and `cli` is `python -m benchmarks`.
"""
