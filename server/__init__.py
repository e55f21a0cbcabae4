"""orq: a job orchestrator for short scripts."""
__version__ = "0.1.0"
