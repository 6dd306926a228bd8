"""Peers on the same workloads (``scripts/bench --peers``): Celery, Dramatiq and taskiq, run from their own venv."""
