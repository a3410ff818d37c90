"""katacr: end-to-end save-migrate-resume harness for Kata workloads."""

__version__ = "0.1.0"
