"""The images: a Debian base built with debootstrap (cached), the wheelhouse, and ours built from compose/Dockerfile."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from deploylib.shell import ROOT, STATE, run, say

BASE_IMAGE = "agent-dispatcher-check/base:bookworm"
IMAGE = "agent-dispatcher:check"
# python3 for our image; redis-server so the same base serves as the check's Redis image (no registry here).
PACKAGES = "python3,python3-venv,ca-certificates,redis-server"
WHEELHOUSE = ROOT / "compose" / "wheelhouse"
DUMB_INIT = "dumb-init==1.2.5.post1"


def mirror() -> str:
    """The Debian mirror apt on this machine uses."""
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        found = re.search(r"(?:URIs:|deb)\s+(https?://\S+/debian)\b", path.read_text() if path.is_file() else "")
        if found:
            return found[1]
    return "http://deb.debian.org/debian"


def image_exists(name: str) -> bool:
    argv = ["docker", "image", "inspect", name]
    return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode == 0


def base_image() -> None:
    """Import the base image from .deploy/base-rootfs.tar, running debootstrap first when it is not cached."""
    if image_exists(BASE_IMAGE):
        say(f"base image {BASE_IMAGE}: present")
        return
    tarball = STATE / "base-rootfs.tar"
    if not tarball.exists():
        rootfs = STATE / "rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        say(f"debootstrap bookworm ({PACKAGES}) from {mirror()}")
        run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(rootfs), mirror()])
        run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."])
        shutil.rmtree(rootfs)
    run(["docker", "import", str(tarball), BASE_IMAGE])
    say(f"base image {BASE_IMAGE}: imported from {tarball.relative_to(ROOT)}")


def wheelhouse() -> None:
    """The project's wheel and every dependency's (and dumb-init's) for the base image's Python, in
    compose/wheelhouse: the dependencies' markers are those of that Python (3.11.2 in bookworm needs
    async-timeout, the host's 3.11.7 does not)."""
    for old in WHEELHOUSE.glob("agent_dispatcher-*.whl"):
        old.unlink()
    version = run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            BASE_IMAGE,
            "python3",
            "-c",
            "import platform; print(platform.python_version())",
        ]
    ).strip()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(WHEELHOUSE), str(ROOT)])
    (ours,) = WHEELHOUSE.glob("agent_dispatcher-*.whl")
    run(
        [
            *pip,
            "download",
            "--quiet",
            "--only-binary=:all:",
            "--python-version",
            version,
            "--dest",
            str(WHEELHOUSE),
            str(ours),
            DUMB_INIT,
            *_marker_deps(version),
        ]
    )
    count = len(list(WHEELHOUSE.glob("*.whl")))
    say(f"wheelhouse: {count} wheels for Python {version} in {WHEELHOUSE.relative_to(ROOT)}")


def _marker_deps(version: str) -> list[str]:
    # pip download --python-version does not evaluate python_full_version markers for the target: redis-py's
    # `async-timeout; python_full_version < "3.11.3"` is added by hand for such a Python.
    return ["async-timeout>=4.0.3"] if tuple(map(int, version.split("."))) < (3, 11, 3) else []


def our_image() -> None:
    """docker build of compose/Dockerfile on the base image, with host networking and no package index."""
    run(
        [
            "docker",
            "build",
            "--network",
            "host",
            "-f",
            "compose/Dockerfile",
            "--build-arg",
            f"BASE_IMAGE={BASE_IMAGE}",
            "-t",
            IMAGE,
            ".",
        ],
        timeout_s=900,
        env={**_env(), "DOCKER_BUILDKIT": "0"},
    )
    size = run(["docker", "image", "inspect", "-f", "{{.Size}}", IMAGE]).strip()
    say(f"image {IMAGE}: built, {int(size) / 1e6:.0f} MB")


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
