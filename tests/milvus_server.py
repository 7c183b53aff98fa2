"""A standalone Milvus server for the tests and benchmarks that need one (issue 32).

The PyPI package ``milvus`` 2.3.5 (Apache-2.0, a 58 MB wheel with the Milvus 2.3.5 binaries;
``pip install 'adah[milvus-server]'``, which ``make setup`` does) runs ``milvus run standalone``
offline, with embedded etcd and local storage under one folder. It is a test and benchmark
dependency, never a runtime one: adah itself only talks to a server through pymilvus.

:class:`StandaloneMilvus` starts it through a small launcher process of its own session (this
file run as a script): the server gets a free port on 127.0.0.1 through its config, its
components register on 127.0.0.1, and the package's ``os.chdir`` stays out of the test process.
The launcher stops the server with the package's own ``stop()`` when told to, or when its stdin
closes (the test process ended, even by SIGKILL); :meth:`StandaloneMilvus.stop` then makes sure
no process of the group is left (a SIGTERM to the Python process that started the server leaves
``milvus run standalone`` running) by killing the launcher's process group as a fallback.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

PACKAGE, VERSION = "milvus", "2.3.5"
#: the components whose advertised address is pinned to loopback
COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexCoord", "indexNode", "dataCoord", "dataNode")


def skip_reason() -> str | None:
    """Why a standalone server cannot run here, or None."""
    if not sys.platform.startswith("linux"):
        return "the standalone Milvus server of the `milvus` package is run on Linux only here"
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return (f"the standalone Milvus server needs the `{PACKAGE}` package: pip install '{PACKAGE}=={VERSION}' "
                "(pip install 'adah[milvus-server]'; make setup installs it)")
    from adah.index import milvus

    if not milvus.available():
        return "pymilvus / milvus-lite not installed: pip install 'adah[milvus]'"
    if version != VERSION:
        return f"the `{PACKAGE}` package is {version}; these tests were written for {VERSION}"
    return None


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports of 127.0.0.1 free now (held together while chosen)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)))
                 for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


class StandaloneMilvus:
    """A Milvus 2.3.5 standalone server in ``base`` on 127.0.0.1:``port`` (free when None):
    ``uri``, :meth:`kill` (SIGKILL of the server, as a crash), :meth:`start` (again, on the same
    data and port) and :meth:`stop` (for good, every process gone)."""

    def __init__(self, base: Path, port: int | None = None, *, timeout: float = 240.0) -> None:
        self.base, self.port, self.timeout = Path(base), port or free_port(), timeout
        self.base.mkdir(parents=True, exist_ok=True)
        self.uri = f"http://127.0.0.1:{self.port}"
        self.server_pid: int | None = None
        self.launcher = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(self.base),
                                          str(self.port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=open(self.base / "launcher.log", "ab"), text=True,
                                         start_new_session=True)
        try:
            self._answer()
        except BaseException:
            self.stop()
            raise

    def _answer(self) -> str:
        """The launcher's reply to the last command (``ok <server pid>``), within ``timeout``."""
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(self.launcher.stdout, selectors.EVENT_READ)
            if not sel.select(self.timeout):
                raise RuntimeError(f"the Milvus server in {self.base} did not answer in {self.timeout:.0f} s "
                                   f"(logs: {self.base / 'logs'})")
        line = self.launcher.stdout.readline().strip()
        if not line.startswith("ok"):
            raise RuntimeError(f"the Milvus server in {self.base} failed: {line or 'the launcher exited'} (see "
                               f"{self.base / 'launcher.log'} and {self.base / 'logs'})")
        parts = line.split()
        self.server_pid = int(parts[1]) if len(parts) > 1 else None
        return line

    def _command(self, what: str) -> str:
        self.launcher.stdin.write(what + "\n")
        self.launcher.stdin.flush()
        return self._answer()

    def kill(self) -> None:
        """SIGKILL the server process (a crash); :meth:`start` brings it back on the same data."""
        self._command("kill")

    def start(self) -> None:
        self._command("start")

    def stop(self) -> None:
        """The server's own ``stop()`` (through the launcher), then nothing of its group left."""
        if self.launcher.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.launcher.stdin.close()  # the launcher stops the server and exits
            try:
                self.launcher.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.launcher.pid, signal.SIGKILL)  # fallback: whatever of its session is left
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.launcher.wait(timeout=10)
        if self.server_pid is not None:
            deadline = time.monotonic() + 10
            while alive(self.server_pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if alive(self.server_pid):
                raise RuntimeError(f"the Milvus server (PID {self.server_pid}) is still running after stop")


def alive(pid: int) -> bool:
    """``pid`` is a running process (not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@contextlib.contextmanager
def running_server(base: Path):
    """A :class:`StandaloneMilvus` in ``base`` for the block (the test skipped with the reason
    where the package is missing), stopped at its end with nothing of it left running."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    server = StandaloneMilvus(base)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory) -> StandaloneMilvus:
    """One standalone Milvus server for the test session."""
    with running_server(tmp_path_factory.mktemp("milvus-server")) as server:
        yield server


# --------------------------------------------------------------------------- the launcher
def _bind_reusing(self, port):
    """MilvusServerConfig.try_bind_port with SO_REUSEADDR: a port left in TIME_WAIT by a killed
    server is free for its restart (the server itself binds with SO_REUSEADDR)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        return sock
    except OSError:
        sock.close()
        return None


#: the embedded etcd's own settings (``$ETCD_CONFIG_PATH``): without them it listens on
#: localhost:2379 and :2380 whatever the Milvus config says, so a second server on the machine
#: (another test session, the fault tests' own server, a benchmark) failed to start. Every
#: other port is chosen here too, at random, once per launcher (kept across restarts): the
#: package's own choice (the first free one from each default up) raced between servers
#: starting at the same time ("bind: address already in use")
ETCD_CONFIG = """name: default
listen-client-urls: http://127.0.0.1:{client}
advertise-client-urls: http://127.0.0.1:{client}
listen-peer-urls: http://127.0.0.1:{peer}
initial-advertise-peer-urls: http://127.0.0.1:{peer}
initial-cluster: default=http://127.0.0.1:{peer}
"""


def _launch(base: str, port: int) -> None:
    import milvus

    milvus.MilvusServerConfig.try_bind_port = _bind_reusing
    config = milvus.MilvusServerConfig(data_dir=base, proxy_port=port)
    keys = sorted(k for k in config.configurable_items if k.endswith("_port") and k != "proxy_port")
    ports = dict(zip([*keys, "peer", "metrics"], free_ports(len(keys) + 2)))
    config.update(**{k: ports[k] for k in keys})
    etcd_config = Path(base) / "embed-etcd.yaml"
    etcd_config.write_text(ETCD_CONFIG.format(client=ports["etcd_port"], peer=ports["peer"]))
    os.environ["ETCD_CONFIG_PATH"] = str(etcd_config)  # the server process inherits it
    for component in COMPONENTS:
        config.set(f"{component}.ip", "127.0.0.1")
    server = milvus.MilvusServer(config)
    server.webservice_port = ports["metrics"]  # its health check and metrics

    def reply(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def start() -> None:
        try:
            server.start()
        except Exception as exc:  # noqa: BLE001 - reported to the test process as one line
            reply(f"error {type(exc).__name__}: {exc}")
            return
        reply(f"ok {server.server_proc.pid}")

    start()
    for line in sys.stdin:
        what = line.strip()
        if what == "kill" and server.server_proc is not None:
            server.server_proc.kill()
            server.server_proc.wait()
            server.server_proc = None
            for fd in server.proc_fds.values():
                fd.close()
            server.proc_fds.clear()
            reply("ok")
        elif what == "start":
            start()
        else:
            reply(f"error unknown command {what!r}")
    server.stop()


if __name__ == "__main__":
    _launch(sys.argv[1], int(sys.argv[2]))
