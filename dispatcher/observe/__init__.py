"""Observability (internal): the Prometheus metrics of every process."""
