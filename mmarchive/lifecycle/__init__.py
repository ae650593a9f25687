"""Lifecycle: which tier data lives on, how long it is kept, what holds it, and the log of every decision.

Plain parts (facts about objects, the policy and its rules, holds, the audit log, pack moves between tiers)
composed by the lifecycle runner, which plans and executes moves and expiries over an open archive. The core
store never imports this package; the runner drives the archive through its public maintenance calls.
"""
