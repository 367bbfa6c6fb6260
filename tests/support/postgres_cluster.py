"""A private, throw-away PostgreSQL cluster that a test (or the soak script) may stop and
start at will, unlike the shared server on 5432 that other tests rely on.

PostgreSQL refuses to run as root, so when we are root every server command runs as the
``postgres`` OS user, in a temporary directory owned by that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from .ports import free_port

SERVER_USER = "postgres"


def _bin_dir() -> Path:
    """The newest installed PostgreSQL's binaries (Debian layout first, then PATH)."""

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(part) for part in name.split(".") if part.isdigit())

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)
    for candidate in reversed(candidates):
        if (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL server binaries (pg_ctl, initdb) not found")


class PostgresCluster:
    """One PostgreSQL cluster on 127.0.0.1:``port``, database ``postgres``, user
    ``postgres``, trust authentication. Use as a context manager or call ``start()``,
    ``stop()`` and ``destroy()`` yourself."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.bin_dir = _bin_dir()
        self.as_root = os.geteuid() == 0
        self.base_dir = Path(tempfile.mkdtemp(prefix="hurricane-pg-"))
        if self.as_root:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.base_dir, user.pw_uid, user.pw_gid)
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir
        self.log_path = self.base_dir / "server.log"
        self._initialized = False

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def running(self) -> bool:
        if not self.data_dir.exists():
            return False
        result = self._run(["pg_ctl", "status", "-D", str(self.data_dir)], check=False)
        # pg_ctl status: 0 running, 3 not running, 4 no usable data directory.
        return result.returncode == 0

    def start(self) -> PostgresCluster:
        if not self._initialized:
            self._initdb()
        if self.running:
            return self
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.socket_dir}"
        )
        self._run(
            [
                "pg_ctl",
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-o",
                options,
            ],
            what="start the cluster",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        """``mode="immediate"`` kills the server without a clean shutdown, like a crash."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown pg_ctl stop mode {mode!r}")
        if not self.running:
            return
        self._run(
            ["pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data_dir)],
            what=f"stop the cluster ({mode})",
        )

    def destroy(self) -> None:
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self._initialized = False

    def __enter__(self) -> PostgresCluster:
        try:
            return self.start()
        except BaseException:
            self.destroy()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.destroy()

    def _initdb(self) -> None:
        self._run(
            [
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ],
            what="initialise the cluster",
        )
        # Speed over durability: this data is thrown away with the test.
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# throw-away test cluster\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "shared_buffers = 16MB\n"
                "max_connections = 50\n"
            )
        self._initialized = True

    def _run(
        self, command: list[str], what: str = "", check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / command[0]), *command[1:]]
        if self.as_root:
            argv = ["runuser", "-u", SERVER_USER, "--", *argv]
        result = subprocess.run(
            argv,
            cwd=self.base_dir,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            server_log = ""
            if self.log_path.exists():
                server_log = self.log_path.read_text(errors="replace")[-4000:]
            raise RuntimeError(
                f"could not {what or command[0]} (exit {result.returncode}): "
                f"{' '.join(argv)}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
                f"\nserver log:\n{server_log}"
            )
        return result
