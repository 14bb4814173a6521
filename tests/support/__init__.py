"""The one test-support layer shared by every suite: ports, waiting, the database
tables, users with tokens per role, and the guard that keeps every test process on the
test stack's ports (see ``portguard``). Fixtures built on these live in
tests/conftest.py."""
