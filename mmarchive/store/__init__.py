"""The store stage: turning an object's bytes into records (chunk, hash, compress) and back.

``sources`` reads what callers give (bytes, files, iterators) as a stream, ``chunking`` cuts large objects
at content-defined boundaries, ``codec`` compresses when it pays, ``chunks`` prepares a chunk record
(BLAKE3 id, codec, xxh3 checksum). Nothing here touches the index or pack files.
"""
