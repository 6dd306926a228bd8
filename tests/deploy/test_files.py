"""Every deploy file parses: YAML (Compose, Prometheus, Grafana provisioning, Kubernetes) and JSON (dashboards)."""

from __future__ import annotations

import json

from deploy.support import COMPOSE, load_all


def test_every_yaml_file_parses() -> None:
    files = sorted([*COMPOSE.rglob("*.yaml"), *COMPOSE.rglob("*.yml")])
    assert len(files) >= 20, files  # compose, prometheus, grafana and k8s files are all found
    for path in files:
        docs = load_all(path)
        assert docs, f"{path} holds no document"
        assert all(isinstance(d, dict) for d in docs), f"{path}: every document is a mapping"


def test_every_json_file_parses() -> None:
    files = sorted(COMPOSE.rglob("*.json"))
    assert files
    for path in files:
        assert isinstance(json.loads(path.read_text()), dict), path
