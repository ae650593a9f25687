"""Archive maintenance composers: verify, garbage collection and index rebuild.

Each works on an open :class:`mmarchive.archive.Archive` under its maintenance lock (no writes staged
meanwhile) and uses the pack reader, the index and the tier directly; the archive calls them, they never
call back into its public write API.
"""
