"""Stdlib-only code that runs one job (shared by the local backend and the Lambda zip)."""
