"""Backends that run jobs: local (bubblewrap sandbox, warm runners) and AWS Lambda."""
