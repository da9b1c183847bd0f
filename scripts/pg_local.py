"""A throwaway PostgreSQL server from Debian's ``postgresql`` package, for tests and load runs.

    uv run python scripts/pg_local.py --dir /tmp/pg --port 55432      # start; prints the URL
    uv run python scripts/pg_local.py --dir /tmp/pg --stop

``initdb`` + ``pg_ctl`` on a local port, data directory in a temporary folder, run as an
unprivileged user (PostgreSQL refuses to run as root: as root it runs as ``nobody``). Trust
authentication on 127.0.0.1 only. The test suite's session fixture uses :class:`LocalPostgres`;
without the binaries (``apt-get install postgresql``) :func:`find_bin_dir` returns None.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "install Debian's PostgreSQL server: sudo apt-get install postgresql"
SUPERUSER = "postgres"


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` holding initdb, else initdb on PATH; None if neither."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalPostgres:
    """One server: ``start()`` (initdb on first use), ``url(db)``, ``stop()``."""

    data_dir: Path
    port: int
    bin_dir: Path
    fast: bool = False  # tests: no fsync (a crash loses the data, which a test never keeps)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses root
            cmd = ["runuser", "-u", "nobody", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if check and done.returncode != 0:
            why = done.stderr.strip() or done.stdout.strip()
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {why}")
        return done

    def start(self) -> LocalPostgres:
        """Create the cluster if ``data_dir`` holds none, start it and wait until it accepts connections."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # nobody must reach the data directory: its parent is made traversable
            self.data_dir.parent.chmod(self.data_dir.parent.stat().st_mode | 0o111)
            shutil.chown(self.data_dir, "nobody", "nogroup")
        self.data_dir.chmod(0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
                      "--encoding=UTF8", "--locale=C.UTF-8")
        opts = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c max_connections=300"
        if self.fast:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data_dir), "-o", opts, "-l", str(self.data_dir / "server.log"),
                  "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop", check=False)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run one statement on the ``postgres`` database outside a transaction (CREATE/DROP DATABASE)."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]  # our own fixed statements


def wait_for(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, required=True, help="data directory (created on first start)")
    p.add_argument("--port", type=int, default=55432)
    p.add_argument("--stop", action="store_true", help="stop the server in --dir")
    args = p.parse_args(argv)
    bin_dir = find_bin_dir()
    if bin_dir is None:
        print(f"error: no PostgreSQL server binaries; {INSTALL_HINT}", file=sys.stderr)
        return 2
    server = LocalPostgres(args.dir, args.port, bin_dir)
    if args.stop:
        server.stop()
        return 0
    server.start()
    print(server.url())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
