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
    """The project's wheel and every dependency's (and dumb-init's), for the image's Python, in compose/wheelhouse."""
    for old in WHEELHOUSE.glob("agent_dispatcher-*.whl"):
        old.unlink()
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(WHEELHOUSE), str(ROOT), DUMB_INIT])
    say(f"wheelhouse: {len(list(WHEELHOUSE.glob('*.whl')))} wheels in {WHEELHOUSE.relative_to(ROOT)}")


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
