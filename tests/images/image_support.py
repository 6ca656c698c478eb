"""Building and running the images with buildah (no Docker daemon, no registry):
the bookworm base image made locally with mmdebstrap and cached outside the
clone, image builds from the real Dockerfile with binaries built on the host,
and commands run in a container with chroot isolation. Also what the suite's
tests share around them: psql against the test server, and waiting for a
started server's URL."""

import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid

# The Dockerfile's runtime base (its DEBIAN_IMAGE default); the test imports
# a locally made bookworm under this name, since nothing can be pulled.
DEBIAN_IMAGE = "docker.io/library/debian:bookworm-slim"

# Where the base tarball is kept between runs on one machine (CI reuses it;
# delete it to get a fresh bookworm). Outside the clone, like the cargo target.
CACHE_DIR = pathlib.Path(os.environ.get("TODO_IMAGE_CACHE", "/var/cache/todo-backend/images"))
BASE_TARBALL = CACHE_DIR / "bookworm-minbase.tar"

MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"


def buildah(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `buildah ARGS`, capturing text output; raises with both streams on failure."""
    result = subprocess.run(
        ["buildah", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"buildah {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


def image_exists(name: str) -> bool:
    return buildah("inspect", "--type", "image", name, check=False).returncode == 0


def image_ids() -> set[str]:
    """Every image in the local store, intermediate ones included."""
    return set(buildah("images", "--all", "--quiet", "--no-trunc").stdout.split())


def container_ids() -> set[str]:
    """Every working container (a failed build can leave some behind)."""
    return set(buildah("containers", "--all", "--quiet", "--notruncate").stdout.split())


def descendant_pids(pid: int, command_name: str) -> list[int]:
    """Processes under `pid` (at any depth) whose command name is `command_name`."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        names[int(entry.name)] = stat[stat.index("(") + 1:stat.rindex(")")]
        parent = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], list(children.get(pid, []))
    while pending:
        current = pending.pop()
        if names.get(current) == command_name:
            found.append(current)
        pending.extend(children.get(current, []))
    return found


def base_tarball() -> pathlib.Path:
    """The cached `mmdebstrap --variant=minbase bookworm` tarball, made on first use.
    A lock keeps two runs on one machine from making it at once."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not BASE_TARBALL.exists():
            partial = BASE_TARBALL.with_suffix(".partial")
            subprocess.run(
                [
                    "mmdebstrap", "--variant=minbase", "--format=tar", "--quiet", "bookworm",
                    str(partial),
                    f"deb {MIRROR} bookworm main",
                    f"deb {MIRROR} bookworm-updates main",
                    f"deb {SECURITY_MIRROR} bookworm-security main",
                ],
                check=True, capture_output=True, text=True, timeout=900,
            )
            # Published whole or not at all: a run killed half-way leaves no
            # truncated tarball for the next one.
            partial.rename(BASE_TARBALL)
    return BASE_TARBALL


@contextlib.contextmanager
def debian_base_image():
    """Makes sure DEBIAN_IMAGE exists locally; removes it afterwards only if
    this run imported it."""
    if image_exists(DEBIAN_IMAGE):
        yield DEBIAN_IMAGE
        return
    tarball = base_tarball()
    container = buildah("from", "scratch").stdout.strip()
    try:
        buildah("add", "--quiet", container, str(tarball), "/")
        buildah("commit", "--quiet", container, DEBIAN_IMAGE)
    finally:
        buildah("rm", container, check=False)
    try:
        yield DEBIAN_IMAGE
    finally:
        buildah("rmi", DEBIAN_IMAGE, check=False)


def build_image(repo_root: pathlib.Path, binaries: pathlib.Path, target: str, tag: str,
                build_args: dict[str, str]) -> None:
    """`buildah bud` of one target of the repository's Dockerfile, with the
    repository as the build context, nothing pulled, and the build context
    `binaries` (a folder holding todo-app and todo-sidecar) in place of the
    Rust build stage."""
    args = ["bud", "--isolation", "chroot", "--pull=never", "--layers=false",
            "--build-context", f"binaries={binaries}",
            "--target", target, "--file", str(repo_root / "Dockerfile"), "--tag", tag]
    for key, value in build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    buildah(*args, str(repo_root), timeout=900)


def image_inspection(name: str) -> dict:
    """`buildah inspect` of an image: `OCIv1.config` holds User, Entrypoint,
    Labels, Env; `Docker.config.Healthcheck` a health check, if any."""
    return json.loads(buildah("inspect", "--type", "image", name).stdout)


@contextlib.contextmanager
def container(image: str):
    """A working container from `image`, removed afterwards."""
    name = f"todo-image-test-{uuid.uuid4().hex[:12]}"
    buildah("from", "--pull=never", "--name", name, image)
    try:
        yield name
    finally:
        buildah("rm", name, check=False)


def run_args(name: str, command: list[str], user: str | None = "1000",
             env: dict[str, str] | None = None, volumes: list[str] | None = None) -> list[str]:
    """The `buildah run` command line for `command` in container `name`:
    chroot isolation, the host's network (loopback reaches the test database)."""
    args = ["buildah", "run", "--isolation", "chroot", "--network", "host"]
    if user is not None:
        args += ["--user", user]
    for key, value in (env or {}).items():
        args += ["--env", f"{key}={value}"]
    for volume in volumes or []:
        args += ["--volume", volume]
    return [*args, name, "--", *command]


def run(name: str, command: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Runs `command` in container `name` to its end (see run_args)."""
    return subprocess.run(run_args(name, command, **kwargs), capture_output=True, text=True,
                          timeout=timeout, check=False)


def available() -> str | None:
    """Why the image tests cannot run here, or None when they can."""
    for tool in ("buildah", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (tests/images/packages.sh installs it)"
    if os.geteuid() != 0:
        return "building images with chroot isolation needs root"
    # The host's binaries run in a bookworm image only if they were linked
    # against bookworm's glibc and libpq.
    os_release = pathlib.Path("/etc/os-release")
    if "VERSION_CODENAME=bookworm" not in (os_release.read_text() if os_release.exists() else ""):
        return "the host's binaries go into a Debian bookworm image: run on Debian 12"
    return None


def psql(url: str, sql: str) -> str:
    """Runs one statement with psql; its unaligned output."""
    result = subprocess.run(["psql", url, "-Atqc", sql], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, f"psql {sql!r}: {result.stderr}"
    return result.stdout.strip()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_for(url: str, process: subprocess.Popen, seconds: float = 60) -> tuple[int, str]:
    """Polls `url` until it answers 200, the process exits, or time runs out;
    returns the last answer (0 when nothing answered)."""
    deadline = time.monotonic() + seconds
    last = (0, "no answer")
    while time.monotonic() < deadline and process.poll() is None:
        try:
            last = get(url)
            if last[0] == 200:
                return last
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            last = (0, str(error))
        time.sleep(0.2)
    return last
