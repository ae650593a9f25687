"""Pack files: the self-describing, append-only containers every stored byte lives in.

``format`` fixes the bytes on disk (docs/format.md is its prose twin), ``writer`` appends records and seals
packs, ``reader`` reads records back verifying every checksum and scans whole packs for verify and reindex.
The package knows nothing of the index, the archive or where pack files are kept.
"""
