"""The benchmark suite behind ``scripts/bench`` (issue 4): workloads, the raw redis-py ceiling, the report."""
