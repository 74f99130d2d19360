"""Real peer programs for the tests: start on a loopback port, wait until ready, stop by pid.

A test that needs a program this machine lacks skips with the reason on a developer's
machine and fails in CI (CI=true), so a green CI run means the test really ran.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """Skip locally, fail in CI: the machine lacks something the test needs."""
    if IN_CI:
        pytest.fail(f"CI must provide this: {reason}", pytrace=False)
    pytest.skip(reason)


def offline_pip() -> dict[str, str]:
    """Environment for a pip run inside a test: no package index, only the wheels
    scripts/setup.sh downloaded (the exporter's dependencies and its build backend), so
    installing the exporter as the README says sends nothing off this machine."""
    wheelhouse = Path(__file__).resolve().parent.parent / ".venv" / "wheelhouse"
    if not any(wheelhouse.glob("setuptools-*.whl")):
        missing(f"no wheels in {wheelhouse} (scripts/setup.sh test downloads them)")
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)}


def need_binary(name: str, package: str) -> str:
    path = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )
    if path is None:
        missing(f"{name} not found (Debian package {package})")
    return path  # type: ignore[return-value]


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        missing(f"{what} needs root")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, *, host: str = "127.0.0.1", timeout: float = 15.0,
                  alive: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the peer exited before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout}s")


def _in_main_thread() -> bool:
    # PR_SET_PDEATHSIG fires when the *thread* that started the child ends: only safe from
    # the main thread, which lives as long as the test session.
    return threading.current_thread() is threading.main_thread()


def _die_with_parent() -> None:
    """In the child before exec: end with SIGTERM if the test process is killed outright,
    so a killed test run leaves no peer behind (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _owns_port(pid: int, port: int) -> bool | None:
    """Whether the process (or a child of it) holds the listening socket; None when /proc
    cannot tell (another OS, or the peer runs in another network namespace)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    pids = [pid] + [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()] \
        if Path(f"/proc/{pid}/task/{pid}/children").exists() else [pid]
    for owner in pids:
        try:
            links = [os.readlink(f) for f in Path(f"/proc/{owner}/fd").iterdir()]
        except OSError:
            return None
        if any(link == f"socket:[{inode}]" for link in links for inode in inodes):
            return True
    return False


def _wait_until_owned(process: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    """A port that answers may belong to someone else (ports are picked free, then bound
    later, and other test runs share the machine): make sure it is our peer listening."""
    deadline = time.monotonic() + timeout
    while _owns_port(process.pid, port) is False:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"port {port} answers, but not from our peer (pid {process.pid})")
        time.sleep(0.05)


class Peer:
    """One peer process. Use as a context manager; always stopped by its own pid."""

    def __init__(self, argv: Sequence[str], *, port: int | None = None, cwd: str | Path | None = None,
                 env: dict[str, str] | None = None, log: Path | None = None, ready_timeout: float = 15.0,
                 stop_timeout: float = 5.0) -> None:
        self.argv = list(argv)
        self.port = port
        self.cwd = cwd
        self.env = env
        self.log = log
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Peer:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent if _in_main_thread() else None,
        )
        if self.port is not None:
            try:
                wait_for_port(self.port, timeout=self.ready_timeout, alive=lambda: self.process.poll() is None)  # type: ignore[union-attr]
                _wait_until_owned(self.process, self.port, self.ready_timeout)
            except Exception:
                self.stop()
                detail = self.log.read_text(errors="replace")[-2000:] if self.log and self.log.exists() else ""
                raise RuntimeError(f"{self.argv[0]} did not start on port {self.port}:\n{detail}") from None
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def __enter__(self) -> Peer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_temp;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    default_type text/plain;
    server {{
        listen {host}:{https_port} ssl;
        listen {host}:{http_port};{extra_listens}
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols {ssl_protocols};
        ssl_ciphers {ssl_ciphers};
{locations}
    }}
}}
"""

ILLIAD_LOCATIONS = """
        location = /illiad/logon.html {{ default_type text/html; return 200 "<html><title>ILLiad Logon</title></html>"; }}
        location = /ILLiadWebPlatform/SystemInfo/PlatformVersion {{ return 200 "ILLiad Platform Version: {platform_version}"; }}
        location = /status/500 {{ return 500 "broken"; }}
        location / {{ return 404 "not here"; }}
"""


# Innovative PatronAPI and SirsiDynix Symphony as far as the probes see them (format with
# dir=the work directory). The access log records every request path, so a test can prove
# what a probe never asked for.
LIBRARY_LOCATIONS = """
        access_log {dir}/access.log;
        location = /PATRONAPI/21913000482538/dump {{ default_type text/html;
            return 200 "<HTML><BODY>\nREC INFO[p!]=p<BR>\nRECORD #[p81]=1000042<BR>\nP BARCODE[pb]=21913000482538<BR>\nEXP DATE[p43]=08-31-27<BR>\n</BODY></HTML>\n"; }}
        location = /PATRONAPI/21913000000001/dump {{ default_type text/html;
            return 200 "<HTML><BODY>\nERRNUM=4<BR>\nERRMSG=Access denied for this address<BR>\n</BODY></HTML>\n"; }}
        location = /PATRONAPI/WRONGSERVICE/dump {{ default_type text/html; return 200 "<html>Welcome to nginx!</html>"; }}
        location ~ ^/PATRONAPI/[^/]+/dump$ {{ default_type text/html;
            return 200 "<HTML><BODY>\nERRNUM=1<BR>\nERRMSG=Requested record not found<BR>\n</BODY></HTML>\n"; }}
        location ~ ^/PATRONAPI/[^/]+/[^/]+/pintest$ {{ default_type text/html; return 200 "<HTML><BODY>RETCOD=0<BR></BODY></HTML>"; }}
        location = /symws/rest/standard/version {{ default_type application/json; return 200 '{{"product":"Symphony"}}'; }}
        location /symws/ {{ return 401 "client id required"; }}
        location / {{ return 404 "not here"; }}
"""


def prometheus_peer(binary: str, config: Path, *extra: str) -> Peer:
    """A real Prometheus with ``config`` on a free loopback port (``.port``); its data and
    log go beside the config."""
    port = free_port()
    return Peer([binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
                 f"--storage.tsdb.path={config.parent / 'data'}", *extra], port=port, log=config.parent / "log")


def prometheus_query(base: str, expr: str) -> list[dict[str, Any]]:
    """The result of an instant query to the Prometheus at ``base``."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]  # type: ignore[no-any-return]


def nginx_argv(workdir: Path, *, cert: Path, key: Path, https_port: int, http_port: int, host: str = "127.0.0.1",
               extra_ports: Sequence[int] = (), locations: str | None = None, platform_version: str = "9.2.2.0",
               ssl_protocols: str = "TLSv1.2 TLSv1.3", ssl_ciphers: str = "HIGH:!aNULL:!MD5") -> list[str]:
    """Write an nginx.conf serving the ILLiad web paths under ``workdir``; the command that runs it.
    ``extra_ports`` are more plain listeners on ``host`` (an Odyssey port, a PatronAPI port)."""
    binary = need_binary("nginx", "nginx-light")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    body = locations if locations is not None else ILLIAD_LOCATIONS.format(platform_version=platform_version)
    extra = "".join(f"\n        listen {host}:{port};" for port in extra_ports)
    conf.write_text(NGINX_CONF.format(dir=workdir, host=host, https_port=https_port, http_port=http_port,
                                      extra_listens=extra, cert=cert, key=key, locations=body,
                                      ssl_protocols=ssl_protocols, ssl_ciphers=f'"{ssl_ciphers}"'))
    return [binary, "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"]


def nginx_peer(workdir: Path, *, cert: Path, key: Path, https_port: int, http_port: int,
               locations: str | None = None, platform_version: str = "9.2.2.0",
               ssl_protocols: str = "TLSv1.2 TLSv1.3", ssl_ciphers: str = "HIGH:!aNULL:!MD5") -> Peer:
    argv = nginx_argv(workdir, cert=cert, key=key, https_port=https_port, http_port=http_port, locations=locations,
                      platform_version=platform_version, ssl_protocols=ssl_protocols, ssl_ciphers=ssl_ciphers)
    return Peer(argv, port=http_port, log=workdir / "stdout.log")


# -- the peers of the ILLiad-specific protocols: FreeTDS, yaz-ztest, xrdp ---------------------

TDSPOOL_CONF = """[global]
[ILLIAD]
port = {port}
server = nowhere
user = illiad
password = not-a-secret
min pool conn = 0
"""


def tdspool_peer(workdir: Path, port: int) -> Peer:
    """FreeTDS' connection pool: answers PRELOGIN like SQL Server 2008 (10.0.1600), with no
    backend. It binds 0.0.0.0 (no address option) and takes 1-3 s to exit on SIGTERM."""
    binary = need_binary("tdspool", "freetds-bin")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "pool.conf"
    conf.write_text(TDSPOOL_CONF.format(port=port))
    return Peer([binary, "-c", str(conf), "ILLIAD"], port=port, log=workdir / "tdspool.log")


NGINX_STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")

TLS_FRONT_CONF = """
load_module {module};
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
stream {{
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        proxy_pass 127.0.0.1:{upstream};
    }}
}}
"""


def tls_front_peer(workdir: Path, *, port: int, upstream: int, cert: Path, key: Path) -> Peer:
    """nginx's stream module terminating TLS in front of a TCP service: TLS first, then the
    service's own protocol inside, which is how a TDS 8.0 (strict) server talks."""
    binary = need_binary("nginx", "nginx-light")
    if not NGINX_STREAM_MODULE.exists():
        missing(f"{NGINX_STREAM_MODULE} not found (Debian package libnginx-mod-stream)")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(TLS_FRONT_CONF.format(module=NGINX_STREAM_MODULE, dir=workdir, port=port, upstream=upstream,
                                         cert=cert, key=key))
    return Peer([binary, "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"], port=port,
                log=workdir / "stdout.log")


def yaz_ztest_peer(workdir: Path, port: int) -> Peer:
    """YAZ's Z39.50 test server (GFS/YAZ) in the foreground."""
    binary = need_binary("yaz-ztest", "yaz")
    workdir.mkdir(parents=True, exist_ok=True)
    return Peer([binary, "-l", str(workdir / "ztest.log"), f"tcp:127.0.0.1:{port}"], port=port, cwd=workdir,
                log=workdir / "stdout.log")


def xrdp_peer(workdir: Path, port: int, *, security_layer: str = "negotiate") -> Peer:
    """xrdp with a copy of the system xrdp.ini listening on a loopback port; needs root to
    read /etc/xrdp/key.pem."""
    binary = need_binary("xrdp", "xrdp")
    need_root("xrdp")
    system_ini = Path("/etc/xrdp/xrdp.ini")
    if not system_ini.exists():
        missing(f"{system_ini} not found (Debian package xrdp)")
    workdir.mkdir(parents=True, exist_ok=True)
    lines, section = [], ""
    for line in system_ini.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        elif section == "[Globals]" and stripped.startswith("port="):
            line = f"port=tcp://127.0.0.1:{port}"
        elif section == "[Globals]" and stripped.startswith("security_layer="):
            line = f"security_layer={security_layer}"
        lines.append(line)
    conf = workdir / "xrdp.ini"
    conf.write_text("\n".join(lines) + "\n")
    Path("/run/xrdp").mkdir(parents=True, exist_ok=True)
    return Peer([binary, "-n", "-c", str(conf)], port=port, log=workdir / "xrdp.log")
SLAPD_CONF = """
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
database mdb
maxsize 10485760
suffix "{suffix}"
rootdn "{rootdn}"
rootpw {rootpw}
directory {dir}/db
"""

SLAPD_ENTRIES = """
dn: {suffix}
objectClass: dcObject
objectClass: organization
dc: {dc}
o: ILLiad test library

dn: {user_dn}
objectClass: inetOrgPerson
cn: {user_cn}
sn: ILLiad
userPassword: {user_password}
"""


def slapd_peer(workdir: Path, *, cert: Path, key: Path, ldap_port: int, ldaps_port: int, suffix: str,
               rootdn: str, rootpw: str, user_dn: str, user_password: str) -> Peer:
    """slapd with an mdb database holding ``suffix`` and one ordinary user (for an
    authenticated bind), listening on ldap:// and ldaps:// on loopback."""
    binary = need_binary("slapd", "slapd")
    slapadd = need_binary("slapadd", "slapd")
    (workdir / "db").mkdir(parents=True, exist_ok=True)
    conf = workdir / "slapd.conf"
    conf.write_text(SLAPD_CONF.format(dir=workdir, cert=cert, key=key, suffix=suffix, rootdn=rootdn, rootpw=rootpw))
    ldif = workdir / "entries.ldif"
    ldif.write_text(SLAPD_ENTRIES.format(suffix=suffix, dc=suffix.split(",")[0].split("=")[1], user_dn=user_dn,
                                         user_cn=user_dn.split(",")[0].split("=")[1], user_password=user_password))
    # Loaded offline, before the server starts: no bind needed, nothing to wait for.
    subprocess.run([slapadd, "-f", str(conf), "-l", str(ldif)], check=True, capture_output=True, timeout=30)
    urls = f"ldap://127.0.0.1:{ldap_port}/ ldaps://127.0.0.1:{ldaps_port}/"
    return Peer([binary, "-f", str(conf), "-h", urls, "-d", "0"], port=ldaps_port, log=workdir / "slapd.log")
