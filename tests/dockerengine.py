"""A Docker engine for the container tests, and the images they run.

No image registry is reachable from this project's machines, so the engine is found or made
here: an engine that already answers (``$DOCKER_HOST`` or the default socket) is used as it
is; otherwise, as root, Debian's ``dockerd`` is started with the vfs driver on a socket and
data-root of its own, and stopped by its pid when the session ends. Its data-root persists,
so the locally made base image (debootstrap's Debian with python3, the stand-in for the
public ``python`` image, made by scripts/test.sh before the tests) and the build cache
survive from one run to the next. The image build takes its wheels from the ones
scripts/setup.sh downloaded: nothing is fetched while the tests run. A lock file
lets only one test session at a time use the engine this module starts.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .peers import free_port, missing, offline_pip

REPO = Path(__file__).resolve().parent.parent
# The stand-in base: Debian bookworm's python3 (3.11), as the public default's Debian flavour.
BASE_IMAGE = "illiad-test-base/bookworm-python3:1"
PROJECT_IMAGE = "illiad-port-exporter:test"
ENGINE_ROOT = Path(os.environ.get("ILLIAD_TEST_DOCKER_ROOT", "/var/lib/illiad-exporter-test-docker"))
RUN_ROOT = Path("/run/illiad-exporter-test-docker")
LOCK_WAIT = 900.0  # another session's container tests (builds included) finish well within this
# Container networks get a /24 from the range set aside for network tests, never a private one.
TEST_NET = ipaddress.ip_network("198.19.128.0/17")


class EngineUnavailable(Exception):
    """No engine could be found or started; the message says why."""


@dataclass
class Engine:
    docker_host: str  # unix:///... socket
    started_pid: int | None = None  # the dockerd this session started, else None

    def cli(self, *args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this engine (builds with BuildKit: with vfs, the classic
        builder copies the whole root filesystem for every step)."""
        env = {**os.environ, "DOCKER_HOST": self.docker_host, "DOCKER_BUILDKIT": "1"}
        proc = subprocess.run([docker_cli(), *args], env=env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:3])}... exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return proc

    def has_image(self, name: str) -> bool:
        return self.cli("image", "inspect", name, check=False).returncode == 0

    def inspect(self, name: str) -> dict[str, object]:
        return json.loads(self.cli("inspect", name).stdout)[0]  # type: ignore[no-any-return]


def docker_cli() -> str:
    # Debian's CLI first: it speaks to Debian's engine and has BuildKit built in (no buildx).
    path = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker")
    if path is None:
        raise EngineUnavailable("no docker CLI (Debian package docker.io)")
    return path


def _answers(docker_host: str, timeout: float = 10.0) -> bool:
    try:
        proc = subprocess.run([docker_cli(), "version", "--format", "{{.Server.Version}}"],
                              env={**os.environ, "DOCKER_HOST": docker_host},
                              capture_output=True, text=True, timeout=timeout)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip())


def _start_dockerd() -> Engine:
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not Path(dockerd).exists():
        raise EngineUnavailable("no dockerd (Debian package docker.io)")
    ENGINE_ROOT.mkdir(parents=True, exist_ok=True)
    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    socket_path = RUN_ROOT / "docker.sock"
    pidfile = RUN_ROOT / "dockerd.pid"
    _stop_stale(pidfile)
    docker_host = f"unix://{socket_path}"
    log = open(ENGINE_ROOT / "dockerd.log", "ab")  # noqa: SIM115 (kept by the child)
    # No default bridge and no iptables rules: this engine must not touch the host's firewall
    # or collide with another engine; tests make their own network, and docker-proxy publishes.
    process = subprocess.Popen(
        [dockerd, "--storage-driver=vfs", f"--data-root={ENGINE_ROOT / 'data'}", f"--exec-root={RUN_ROOT / 'exec'}",
         f"--pidfile={pidfile}", f"--host={docker_host}", "--bridge=none", "--iptables=false",
         "--ip-masq=false", "--log-level=warn"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (ENGINE_ROOT / "dockerd.log").read_text(errors="replace")[-2000:]
            raise EngineUnavailable(f"dockerd exited {process.returncode}:\n{tail}")
        if socket_path.exists() and _answers(docker_host, timeout=5):
            return Engine(docker_host, started_pid=process.pid)
        time.sleep(0.3)
    _stop_pid(process.pid)
    raise EngineUnavailable("dockerd did not answer within 60 s")


def _stop_stale(pidfile: Path) -> None:
    """A dockerd left by a killed session of ours still holds the data-root: stop it by its pid."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"dockerd" in cmdline and str(ENGINE_ROOT).encode() in cmdline:
        _stop_pid(pid)


def _stop_pid(pid: int, timeout: float = 30.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child: poll for its disappearance
            done = 0 if Path(f"/proc/{pid}").exists() else pid
        if done:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


@contextmanager
def _session_lock() -> Iterator[None]:
    ENGINE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(ENGINE_ROOT / "session.lock", "w") as lock:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EngineUnavailable(f"another test session held {ENGINE_ROOT} for {LOCK_WAIT:.0f} s") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def docker_engine() -> Iterator[Engine]:
    """An engine that answers: the running one, or one started here and stopped afterwards."""
    for host in (os.environ.get("DOCKER_HOST"), "unix:///var/run/docker.sock"):
        if host and (not host.startswith("unix://") or Path(host[7:]).exists()) and _answers(host):
            yield Engine(host)
            return
    if os.geteuid() != 0:
        raise EngineUnavailable("no Docker engine runs and starting dockerd needs root")
    with _session_lock():
        engine = _start_dockerd()
        try:
            _remove_leftovers(engine)
            yield engine
        finally:
            # Keep the base image and the latest build; drop what earlier builds left.
            engine.cli("image", "prune", "--force", check=False)
            engine.cli("builder", "prune", "--force", "--keep-storage", "8GB", check=False)
            _stop_pid(engine.started_pid)  # type: ignore[arg-type]


def _remove_leftovers(engine: Engine) -> None:
    """What a killed session left in this engine's data-root: stopped containers and test
    networks (whose bridges would otherwise stay on the host). Under the lock, none is in use."""
    engine.cli("container", "prune", "--force", check=False)
    names = engine.cli("network", "ls", "--filter", "name=illiad-test-", "--format", "{{.Name}}", check=False)
    for name in names.stdout.split():
        engine.cli("network", "rm", name, check=False)


def ensure_base_image(engine: Engine, name: str = BASE_IMAGE) -> str:
    """The stand-in for the public python image, imported once (and kept by name) from the
    root file system scripts/test.sh made with debootstrap (scripts/base-image.sh)."""
    if engine.has_image(name):
        return name
    rootfs = REPO / ".cache" / "base-bookworm.tar"
    if not rootfs.exists():
        raise EngineUnavailable(f"no {rootfs} to make the base image of (scripts/test.sh makes it, as root)")
    with rootfs.open("rb") as tar:
        imported = subprocess.run([docker_cli(), "import", "--change", 'CMD ["python3"]', "-", name], stdin=tar,
                                  env={**os.environ, "DOCKER_HOST": engine.docker_host}, capture_output=True,
                                  text=True, timeout=600)
    if imported.returncode != 0:
        raise EngineUnavailable(f"docker import failed: {imported.stderr[-2000:]}")
    return name


def build_project_image(engine: Engine, base: str, tag: str = PROJECT_IMAGE) -> str:
    """Build the repository's Dockerfile on the given base, its wheels from the ones
    scripts/setup.sh downloaded, served on loopback (host network), with no package index."""
    wheelhouse = offline_pip()["PIP_FIND_LINKS"]
    with _served(wheelhouse) as url:
        engine.cli("build", "--network", "host", "--build-arg", f"BASE_IMAGE={base}", "--build-arg", "PIP_NO_INDEX=1",
                   "--build-arg", f"PIP_FIND_LINKS={url}", "--tag", tag, str(REPO), timeout=900)
    return tag


@contextmanager
def _served(directory: str) -> Iterator[str]:
    """``directory`` over HTTP on a loopback port, for as long as the block runs."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", directory,
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise EngineUnavailable("the wheel server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        server.wait(10)


def free_test_subnet(taken: Sequence[str] = ()) -> ipaddress.IPv4Network:
    """A /24 of TEST_NET that no interface on this machine and no given network uses."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, timeout=10).stdout
    used = [ipaddress.ip_interface(word).network for word in out.split() if "/" in word and word[0].isdigit()]
    used += [ipaddress.ip_network(t) for t in taken]
    start = int.from_bytes(os.urandom(2), "big")
    subnets = list(TEST_NET.subnets(new_prefix=24))
    for i in range(len(subnets)):
        candidate = subnets[(start + i) % len(subnets)]
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise EngineUnavailable(f"no free /24 left in {TEST_NET}")
