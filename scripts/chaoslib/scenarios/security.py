"""16: an ACL user limited to the dispatcher's keys and commands, TLS with a test CA, and a static check that
task data is never unpickled or evaluated."""

from __future__ import annotations

import ast
import shutil
import subprocess
import time
from pathlib import Path

from chaoslib.procs import REPO, RedisProc, free_port
from chaoslib.scenarios.common import Ctx, wait_exit
from chaoslib.scenarios.kills import _submit
from chaoslib.verdict import Verdict
from dispatcher import Dispatcher, DispatcherError, RedisUnavailable

ACL_RULES = [
    "+@stream",
    "+@hash",
    "+@string",
    "+@set",
    "+@sortedset",
    "+@scripting",
    "+@pubsub",
    "+@connection",
    "+del",
    "+exists",
    "+pexpire",
    "-@dangerous",
    "+info",
    "+time",
]
"""What a dispatcher user needs: data commands of its types, scripts, pub/sub, INFO, TIME (due times and expiry
are decided by Redis' clock); nothing @dangerous
(no FLUSHALL, KEYS, CONFIG, DEBUG...) and only its own prefix's keys and channels."""

BANNED_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle", "yaml"}
BANNED_CALLS = {"eval", "exec", "compile", "__import__"}
ALLOWED_DYNAMIC_IMPORT = {"workers/app.py"}
"""importlib use allowed only where the operator's own ``--app`` module is loaded (configuration, not task data)."""


def static_check(root: Path = REPO) -> list[str]:
    """Every use of pickle-like modules, eval/exec/compile, or dynamic import in dispatcher/ and workers/."""
    found = []
    for package in ("dispatcher", "workers"):
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            tree = ast.parse(path.read_text(), rel)
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module.split(".")[0]]
                if any(n in BANNED_MODULES for n in names):
                    found.append(f"{rel}:{node.lineno} imports {names}")
                dynamic = (isinstance(node, ast.Attribute) and node.attr == "import_module") or (
                    isinstance(node, ast.ImportFrom) and any(a.name == "import_module" for a in node.names)
                )
                if dynamic and rel not in ALLOWED_DYNAMIC_IMPORT:
                    found.append(f"{rel}:{node.lineno} dynamic import")
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in BANNED_CALLS:
                    found.append(f"{rel}:{node.lineno} calls {node.func.id}()")
    return found


def _acl(ctx: Ctx, v: Verdict) -> None:
    with ctx.world("s16-acl") as w:
        admin = w.client()
        p = w.prefix
        admin.execute_command(
            "ACL", "SETUSER", "disp", "on", ">disp-pw", f"~{p}:*", "resetchannels", f"&{p}:*", *ACL_RULES
        )
        admin.execute_command("ACL", "SETUSER", "nobody", "on", ">nobody-pw", "~other:*", "+@all")
        url = f"redis://disp:disp-pw@127.0.0.1:{w.redis.port}/0"
        w.start_worker("acl0", url=url)
        t0 = time.monotonic()
        with Dispatcher(w.settings(url)) as d:
            handle = d.submit("echo", {"acl": True})
            value = handle.result(timeout_s=20)
        ids = _submit(w, "echo", list(range(20)))
        tally, _ = w.wait_settled(["echo"], 30, ids)
        v.check("ACL user: end to end", value == {"acl": True} and tally.lost == 0, (value, tally.lost))
        v.timings["acl_round_trip_s"] = time.monotonic() - t0
        bad_url = f"redis://nobody:nobody-pw@127.0.0.1:{w.redis.port}/0"
        message = ""
        try:
            with Dispatcher(w.settings(bad_url)) as d:
                d.submit("echo", 1)
        except DispatcherError as e:
            message = str(e)
        v.check("user without rights: clear error", "NOPERM" in message or "permission" in message, message)
        v.check("error hides the password", "nobody-pw" not in message, message)
        bad = w.start_worker("acl-bad", url=bad_url, wait=False)
        code = wait_exit(bad, 20)
        log = w.procs.log(bad).strip().splitlines()
        v.check("worker without rights exits with one readable line", code not in (0, None) and log, (code, log[-1:]))
        v.figures["no_rights_submit_error"] = message
        v.figures["no_rights_worker"] = log[-1] if log else ""
        v.tally = w.tally(["echo"])


def _certs(d: Path) -> bool:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        return False
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    steps = [
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=chaos-test-ca",
        "req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1",
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext",
    ]
    for step in steps:
        subprocess.run(["openssl", *step.split()], cwd=d, check=True, capture_output=True, timeout=60)
    return True


def _tls(ctx: Ctx, v: Verdict) -> None:
    w = ctx.world("s16-tls")
    certs = w.dir / "certs"
    certs.mkdir(exist_ok=True)
    if not _certs(certs):
        v.notes.append("TLS not checked: no openssl CLI")
        return
    tls_port = free_port()
    args = [
        *("--tls-port", str(tls_port), "--tls-cert-file", str(certs / "server.crt")),
        *("--tls-key-file", str(certs / "server.key"), "--tls-ca-cert-file", str(certs / "ca.crt")),
        *("--tls-auth-clients", "no"),
    ]
    w.redis = RedisProc(w.procs, w.dir, args)
    with w:
        url = f"rediss://127.0.0.1:{tls_port}/0"
        ca = str(certs / "ca.crt")
        w.start_worker("tls0", url=url, extra=["--ssl-ca-file", ca])
        with Dispatcher(w.settings(url, ssl_ca_file=ca)) as d:
            value = d.submit("echo", {"tls": True}).result(timeout_s=20)
        v.check("TLS with a test CA: end to end", value == {"tls": True}, value)
        t0 = time.monotonic()
        plain_error = ""
        try:
            with Dispatcher(w.settings(f"redis://127.0.0.1:{tls_port}/0", retry_attempts=0)) as d:
                d.submit("echo", 1)
        except DispatcherError as e:
            plain_error = f"{type(e).__name__}: {e}"
        took = time.monotonic() - t0
        v.check(
            "plain text to the TLS port fails clearly", plain_error.startswith(RedisUnavailable.__name__), plain_error
        )
        v.check("... within 5 s", took <= 5.0, f"{took:.2f}s", timing=True)
        unverified = ""
        try:
            with Dispatcher(w.settings(url, retry_attempts=0)) as d:
                d.submit("echo", 1)
        except DispatcherError as e:
            unverified = f"{type(e).__name__}: {e}"
        v.check("rediss without the CA is refused", "certificate" in unverified.lower(), unverified)
        v.timings["plain_to_tls_fail_s"] = took
        v.figures["plain_to_tls_error"] = plain_error
        v.figures["unknown_ca_error"] = unverified


def security(ctx: Ctx, v: Verdict) -> None:
    _acl(ctx, v)
    _tls(ctx, v)
    found = static_check()
    v.figures["static_check_findings"] = found
    v.check("no pickle/marshal/eval/exec/dynamic import of task data", not found, found)
