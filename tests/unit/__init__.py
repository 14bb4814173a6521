"""Fast tests of the pure parts: no database, no stack, no process (`make test-fast`)."""
