"""The Kubernetes Redis ACL file grants the worker and the producer at least the rules docs/wire-format.md
documents (section 17, which tests/integration/test_wire_format.py runs a producer and a worker under)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from deploy.support import COMPOSE

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"


def documented(user: str) -> set[str]:
    found = re.search(rf"^```text acl:{user}\n(.*?)\n```$", DOC.read_text(), re.MULTILINE | re.DOTALL)
    assert found, f"no acl:{user} block in {DOC.name}"
    return {w.replace("P:", "dispatcher:", 1) if w[:3] in ("~P:", "&P:") else w for w in found[1].split()}


@pytest.mark.parametrize("user", ["worker", "producer"])
def test_the_k8s_acl_file_grants_what_the_document_says(user: str) -> None:
    lines = [line.split() for line in (COMPOSE / "k8s" / "redis" / "users.acl").read_text().splitlines()]
    (words,) = [w for w in lines if w[:2] == ["user", user]]
    missing = documented(user) - set(words)
    assert not missing, f"users.acl's {user} lacks {sorted(missing)}"
