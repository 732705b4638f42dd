"""The deployment beyond one machine, on this one: PgBouncer in transaction mode between
the replicas and PostgreSQL, HAProxy in front of the replicas (HTTP and WebSocket,
health checked on /readyz). Debian's `pgbouncer` and `haproxy` run as programs of their
own, with their configuration in a folder of their own, on free ports; the system
services are never used.

The configuration texts here are the ones tests/system/test_topology.py runs and bench/replicas.py
measures; deploy/ holds the same arrangement for Compose and Kubernetes.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

# The server-side statement timeout: the service sends no startup parameters through
# PgBouncer (1.18 refuses those it does not track), so PgBouncer sets it on each server
# connection it opens.
CONNECT_QUERY = "SET statement_timeout = 15000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_of(url: str) -> tuple[str, int, str, str]:
    """(host or socket folder, port, user, database) of a PostgreSQL URL."""
    u = urlparse(url.replace("postgresql+asyncpg://", "postgresql://"))
    host = u.hostname or parse_qs(u.query)["host"][0]
    return host, u.port or 5432, u.username or "postgres", u.path.lstrip("/")


def pgbouncer_ini(folder: Path, port: int, direct_url: str, pool_size: int) -> str:
    host, pg_port, user, database = server_of(direct_url)
    return f"""\
[databases]
{database} = host={host} port={pg_port} connect_query='{CONNECT_QUERY}'

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder}/userlist.txt
pool_mode = transaction
default_pool_size = {pool_size}
reserve_pool_size = 0
max_client_conn = 1000
server_reset_query =
logfile = {folder}/pgbouncer.log
pidfile = {folder}/pgbouncer.pid
admin_users = {user}
"""


def haproxy_cfg(port: int, server_ports: list[int]) -> str:
    """Round robin over the replicas; a request whose connection is refused (a draining
    replica has closed its socket) goes to another one; WebSockets are tunnels."""
    servers = "\n".join(
        f"    server r{i} 127.0.0.1:{p} check" for i, p in enumerate(server_ports, 1)
    )
    return f"""\
global
    maxconn 4000
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    retries 3
    option redispatch
    retry-on conn-failure

frontend okr
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    timeout check 2s
    default-server inter 500ms fall 2 rise 1
{servers}
"""


def pgbouncer_folder(direct_url: str, port: int, pool_size: int) -> tuple[Path, list[str]]:
    """A folder holding PgBouncer's configuration, and the command that runs it.

    PgBouncer refuses to run as root: then it runs as the owner of PostgreSQL's socket
    folder (which only that user may enter), or as nobody for a server over TCP, and the
    folder is theirs."""
    folder = Path(tempfile.mkdtemp(prefix="okr-pgbouncer-"))
    host, _port, user, _db = server_of(direct_url)
    (folder / "userlist.txt").write_text(f'"{user}" ""\n')
    (folder / "pgbouncer.ini").write_text(pgbouncer_ini(folder, port, direct_url, pool_size))
    command = [shutil.which("pgbouncer") or "pgbouncer"]
    if os.geteuid() == 0:
        owner = pwd.getpwuid(os.stat(host).st_uid).pw_name if host.startswith("/") else "nobody"
        uid = pwd.getpwnam(owner).pw_uid
        os.chmod(folder, 0o755)
        for path in [folder, *folder.iterdir()]:
            os.chown(path, uid, -1)
        command += ["-u", owner]
    return folder, [*command, str(folder / "pgbouncer.ini")]


def pooled_url(direct_url: str, port: int) -> str:
    _host, _port, user, database = server_of(direct_url)
    return f"postgresql://{user}@127.0.0.1:{port}/{database}"


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 10) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port}")


class PgBouncer:
    """PgBouncer in front of `direct_url`'s database, for the benchmarks."""

    def __init__(self, direct_url: str, pool_size: int) -> None:
        self.port = free_port()
        self.folder, command = pgbouncer_folder(direct_url, self.port, pool_size)
        self.url = pooled_url(direct_url, self.port)
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port, self.proc, "pgbouncer")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


class HAProxy:
    """HAProxy in front of replicas on `server_ports`, for the benchmarks."""

    def __init__(self, server_ports: list[int]) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="okr-haproxy-"))
        (self.folder / "haproxy.cfg").write_text(haproxy_cfg(self.port, server_ports))
        log = open(os.environ.get("OKR_BENCH_LOG", os.devnull), "ab")
        self.proc = subprocess.Popen(
            [shutil.which("haproxy") or "haproxy", "-db", "-f", str(self.folder / "haproxy.cfg")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        wait_for_port(self.port, self.proc, "haproxy")
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)
