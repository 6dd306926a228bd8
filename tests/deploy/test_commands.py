"""Every command the deploy files run parses with this tree's `worker` and `dispatcher` CLIs, and every probe and
scrape points at the port that command serves on: the image's CMD and HEALTHCHECK, each Compose service's command
and healthcheck (alone and with the host-network override), each Kubernetes container's args, probes, ports and
scrape annotations, and Prometheus' scrape config. A renamed flag or a moved port fails here, not in production."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from deploy.support import COMPOSE, HOSTNET, PROMETHEUS, build, kustomizations, load, of_kind, rendered

from dispatcher.cli import main as dispatcher_cli
from dispatcher.cli.parsing import UsageError
from dispatcher.observe.exporter import DEFAULT_PORT
from workers import command as worker_cli

PARSERS = {"worker": worker_cli.parser, "dispatcher": dispatcher_cli.build_parser}
OURS = "agent-dispatcher"  # the image name every one of our Kubernetes containers uses


def parse(argv: list[str], where: str) -> argparse.Namespace:
    """``argv`` (``worker ...`` or ``dispatcher ...``) parsed by that CLI's own parser; fail naming ``where``."""
    assert argv and argv[0] in PARSERS, f"{where}: {argv} runs neither worker nor dispatcher"
    try:
        return PARSERS[argv[0]]().parse_args(argv[1:])
    except UsageError as e:
        mistake = str(e)
    pytest.fail(f"{where}: {argv} does not parse: {mistake}")


def served(args: argparse.Namespace, where: str) -> tuple[str, int] | None:
    """The address and port the parsed command serves /metrics, /livez and /readyz on (None: it serves none)."""
    if getattr(args, "command", None) == "exporter":
        return args.addr, args.port
    if hasattr(args, "metrics_port"):
        assert args.metrics_port is not None, f"{where}: a worker without --metrics-port has no probes to answer"
        return args.metrics_addr, args.metrics_port
    return None


def healthcheck_port(argv: list[str], where: str) -> int | None:
    """The port a ``dispatcher healthcheck --worker URL`` asks (None: it checks Redis); the command must parse."""
    args = parse(argv, where)
    assert args.command == "healthcheck", f"{where}: {argv}"
    if args.worker is None:
        return None
    url = urlsplit(args.worker)
    assert url.hostname == "127.0.0.1", f"{where}: the check runs in the container, on loopback: {args.worker}"
    return url.port


def dockerfile_json(instruction: str) -> list[str]:
    line = next(x for x in (COMPOSE / "Dockerfile").read_text().splitlines() if x.startswith(instruction + " "))
    found: list[str] = json.loads(re.search(r"\[.*\]", line)[0])  # type: ignore[index]
    return found


def test_the_image_cmd_and_healthcheck_parse() -> None:
    args = parse(dockerfile_json("CMD"), "Dockerfile CMD")
    assert served(args, "Dockerfile CMD") == ("0.0.0.0", 9100)
    assert healthcheck_port(dockerfile_json("HEALTHCHECK"), "Dockerfile HEALTHCHECK") is None


@pytest.mark.parametrize("files", [(), tuple(HOSTNET)], ids=["compose", "hostnet"])
def test_compose_commands_parse_and_healthchecks_ask_their_port(files: tuple[str, ...]) -> None:
    checked = 0
    for name, service in rendered(*files)["services"].items():
        if name in ("redis", "prometheus", "grafana"):
            continue
        where = f"compose {' '.join(files) or 'compose.yaml'}: {name}"
        own = served(parse(service["command"], where), where)
        test = service.get("healthcheck", {}).get("test")
        if test is None:  # the image's HEALTHCHECK (Redis answers): the reaper serves no port
            assert own is None, f"{where}: serves {own} but has no healthcheck asking it"
            continue
        assert test[0] == "CMD", where
        port = healthcheck_port(test[1:], where)
        assert own is not None and port == own[1], f"{where}: the healthcheck asks {port}, the process serves {own}"
        if not files:
            assert own[0] == "0.0.0.0", f"{where}: Prometheus reaches it over the service network"
        checked += 1
    assert checked >= 4  # worker-echo, worker-sleep, worker-app, exporter (and worker-sleep-2 in hostnet)


def test_prometheus_scrapes_the_ports_compose_serves() -> None:
    services = rendered()["services"]
    ports = {name: served(parse(s["command"], name), name) for name, s in services.items() if name.startswith("w")}
    jobs = {job["job_name"]: job for job in load(PROMETHEUS / "prometheus.yml")["scrape_configs"]}
    (exporter_target,) = jobs["dispatcher-exporter"]["static_configs"][0]["targets"]
    exporter = served(parse(services["exporter"]["command"], "exporter"), "exporter")
    assert exporter == ("0.0.0.0", DEFAULT_PORT) and exporter_target == f"exporter:{DEFAULT_PORT}"
    (dns,) = jobs["dispatcher-workers"]["dns_sd_configs"]
    assert set(dns["names"]) == set(ports), "every worker service is scraped, and only those"
    assert {port for _, port in ports.values()} == {dns["port"]}  # type: ignore[misc]


def probe_port(probe: dict[str, Any], named: dict[str, int]) -> int:
    port = probe["httpGet"]["port"]
    return named[port] if isinstance(port, str) else int(port)


def check_container(container: dict[str, Any], annotations: dict[str, str], where: str) -> tuple[str, int] | None:
    """The container's args parse (the image's entrypoint runs them); its probes, ports and scrape annotation
    point at what it serves. Its address and port, None when it serves none."""
    assert "command" not in container, f"{where}: the image's ENTRYPOINT (dumb-init) must stay"
    own = served(parse(container["args"], where), where)
    named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    for kind in ("livenessProbe", "readinessProbe"):
        probe = container.get(kind)
        if probe is None:
            continue
        if "exec" in probe:
            port = healthcheck_port(probe["exec"]["command"], f"{where} {kind}")
            assert port is None or (own is not None and port == own[1]), f"{where} {kind}"
        else:
            path = {"livenessProbe": "/livez", "readinessProbe": "/readyz"}[kind]
            assert probe["httpGet"]["path"] == path, f"{where} {kind}"
            assert own is not None and probe_port(probe, named) == own[1], f"{where} {kind}: not the served port"
    if own is not None:
        assert own[0] == "0.0.0.0", f"{where}: the kubelet and Prometheus reach the pod's IP, not its loopback"
        assert named.get("metrics") == own[1], f"{where}: containerPort 'metrics' is not {own[1]}"
        assert annotations.get("prometheus.io/port", str(own[1])) == str(own[1]), f"{where}: scrape annotation"
    return own


@pytest.mark.parametrize("folder", kustomizations(), ids=lambda p: str(p.relative_to(COMPOSE / "k8s")))
def test_k8s_commands_parse_and_probes_ask_their_port(folder: Path) -> None:
    objects = build(folder)
    served_ports: dict[str, int] = {}
    for d in of_kind(objects, "Deployment"):
        template = d["spec"]["template"]
        for c in template["spec"]["containers"]:
            if c["image"].split(":")[0].endswith(OURS):
                where = f"{folder.name}: {d['metadata']['name']}/{c['name']}"
                own = check_container(c, template["metadata"].get("annotations", {}), where)
                if own is not None:
                    served_ports[d["metadata"]["name"]] = own[1]
    for service in of_kind(objects, "Service"):
        if service["metadata"]["name"] == "exporter":
            (port,) = service["spec"]["ports"]
            assert port["port"] == served_ports["exporter"] == DEFAULT_PORT
            assert service["metadata"]["annotations"]["prometheus.io/port"] == str(DEFAULT_PORT)
