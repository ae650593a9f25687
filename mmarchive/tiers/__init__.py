"""Tiers: the places pack files live (a local directory today; more kinds come with the lifecycle).

A tier stores whole pack files by name and gives random access to their bytes. It knows nothing of records,
the index or objects.
"""
