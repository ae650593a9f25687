"""The LMDB index: a cache of where every object, chunk and pack is, rebuildable from the packs alone.

``env`` opens the LMDB environment (map growth, reader slots, stale readers, fork safety), ``schema``
encodes its keys and values, ``batch`` applies one group commit of staged changes in one write
transaction. Nothing here reads or writes pack files.
"""
