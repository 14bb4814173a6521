"""`make chaos`: the local stack under a seeded schedule of faults, a mixed load, and a
reconciliation of every effect afterwards (docs/reliability.md)."""
