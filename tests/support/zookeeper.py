"""Start and stop real, local Apache ZooKeeper servers.

Used by the test-suite, the benchmarks and the demo project.  Standard library
only; the server itself is the ZooKeeper jar run with ``java``.

* :class:`ZooKeeperServer` -- one standalone node (or one member of an ensemble),
  restartable on the same port and data directory, keeping its data.
* :class:`ZooKeeperEnsemble` -- a quorum of nodes on loopback.
* A command line for a persistent local node (used by the demo's Makefile)::

      python -m tests.support.zookeeper start  --dir .zk --port 2181
      python -m tests.support.zookeeper status --dir .zk
      python -m tests.support.zookeeper stop   --dir .zk

Where ZooKeeper comes from: the ``ZKFLAGS_ZOOKEEPER_CLASSPATH`` environment
variable if set, else Debian/Ubuntu's ``zookeeper`` package
(``apt-get install zookeeper``).

Every server started by this module (except detached ones, see
:meth:`ZooKeeperServer.start`) is killed at interpreter exit, so an aborted test
run does not leave JVMs behind.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

__all__ = [
    "CLASSPATH_ENV_VAR",
    "DEFAULT_JVM_FLAGS",
    "ZooKeeperEnsemble",
    "ZooKeeperError",
    "ZooKeeperNotInstalled",
    "ZooKeeperServer",
    "ZooKeeperStartError",
    "find_classpath",
    "find_java",
    "four_letter",
    "free_port",
    "free_ports",
    "main",
]

CLASSPATH_ENV_VAR = "ZKFLAGS_ZOOKEEPER_CLASSPATH"

DEBIAN_JAR = "/usr/share/java/zookeeper.jar"
DEBIAN_CONF_DIR = "/etc/zookeeper/conf"
# Debian's zookeeper.jar pulls its dependencies in through its manifest's
# Class-Path, and the server starts with just the jar and the conf dir.  But
# that Class-Path has slf4j-api without any binding, so the server logs
# *nothing* (slf4j's NOP logger): a server that fails to start (e.g. port in
# use) exits 1 silently.  The log4j 1.2 binding and log4j itself are installed
# with it (dependencies of libzookeeper-java); with them the server logs to its
# console (our log file) through /etc/zookeeper/conf/log4j.properties.  They
# cost about 0.13 s of start time.
DEBIAN_LOGGING_JARS = (
    "/usr/share/java/slf4j-log4j12.jar",
    "/usr/share/java/log4j-1.2.jar",
)

MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"

# Measured on a 2-core machine (time from exec to "imok", median of 5):
# no flags 0.33 s, SerialGC 0.33 s, SerialGC + C1 only 0.28 s.  -Xshare:auto is
# the JDK's default (kept explicit); -XX:-UsePerfData made no difference.
DEFAULT_JVM_FLAGS: tuple[str, ...] = (
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
)

LOG_FILE_NAME = "zookeeper.log"
CONFIG_FILE_NAME = "zoo.cfg"
PID_FILE_NAME = "zookeeper.pid"
DATA_SUBDIR = "data"

_LOOPBACK = "127.0.0.1"
_INSTALL_HINT = (
    "Install it with `apt-get install zookeeper` (Debian/Ubuntu; the server jar "
    f"is then {DEBIAN_JAR}), or point {CLASSPATH_ENV_VAR} at a ZooKeeper "
    "classpath, e.g. '/opt/zookeeper/lib/*:/opt/zookeeper/conf'."
)


class ZooKeeperError(RuntimeError):
    """Base class of this module's errors."""


class ZooKeeperNotInstalled(ZooKeeperError):
    """ZooKeeper (or Java) is not available on this machine."""


class ZooKeeperStartError(ZooKeeperError):
    """A server died during start-up or did not become ready in time."""


# ---------------------------------------------------------------------------
# Discovery helpers


def find_classpath() -> str:
    """Return the Java classpath for running a ZooKeeper server.

    ``$ZKFLAGS_ZOOKEEPER_CLASSPATH`` wins when set (used verbatim).  Otherwise
    Debian's ``/usr/share/java/zookeeper.jar:/etc/zookeeper/conf`` (plus the
    slf4j/log4j binding jars, when present, so the server writes a log).

    Raises :class:`ZooKeeperNotInstalled` when no ZooKeeper is found.
    """
    from_env = os.environ.get(CLASSPATH_ENV_VAR, "").strip()
    if from_env:
        return from_env
    if not os.path.isfile(DEBIAN_JAR):
        raise ZooKeeperNotInstalled(
            f"ZooKeeper is not installed: {DEBIAN_JAR} does not exist and "
            f"{CLASSPATH_ENV_VAR} is not set. {_INSTALL_HINT}"
        )
    parts = [DEBIAN_JAR, DEBIAN_CONF_DIR]
    parts += [jar for jar in DEBIAN_LOGGING_JARS if os.path.isfile(jar)]
    return os.pathsep.join(parts)


def find_java() -> str:
    """Return the path of the ``java`` executable, or raise :class:`ZooKeeperNotInstalled`."""
    java = shutil.which("java")
    if java is None:
        raise ZooKeeperNotInstalled(
            "`java` was not found on PATH; ZooKeeper needs a Java runtime "
            "(`apt-get install zookeeper` installs one as a dependency)."
        )
    return java


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports on 127.0.0.1 that are free right now."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((_LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def four_letter(host: str, port: int, cmd: str, timeout: float = 2.0) -> str:
    """Send a ZooKeeper "four letter word" (``ruok``, ``srvr``, ``mntr``...) and return the reply.

    Returns ``""`` when nothing listens on the port (connection refused) or the
    server closes the connection without answering.  Raises :class:`TimeoutError`
    when the server accepts but does not answer within ``timeout`` (e.g. it is
    paused with SIGSTOP) and :class:`OSError` for other network errors.
    """
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(cmd.encode("ascii"))
            chunks: list[bytes] = []
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no reply to {cmd!r} from {host}:{port} within {timeout} s")
                sock.settimeout(remaining)
                try:
                    chunk = sock.recv(65536)
                except TimeoutError as exc:
                    raise TimeoutError(
                        f"no reply to {cmd!r} from {host}:{port} within {timeout} s"
                    ) from exc
                if not chunk:
                    break
                chunks.append(chunk)
    except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
        return ""
    except TimeoutError as exc:  # connect() timed out
        raise TimeoutError(f"could not connect to {host}:{port} within {timeout} s") from exc
    return b"".join(chunks).decode("utf-8", "replace")


def _parse_mode(srvr_reply: str) -> str | None:
    for line in srvr_reply.splitlines():
        if line.startswith("Mode:"):
            return line.partition(":")[2].strip() or None
    return None


def _parse_conf(conf_reply: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for line in conf_reply.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            result[key.strip()] = value.strip()
    return result


# ---------------------------------------------------------------------------
# Cleanup of servers at interpreter exit

_live_lock = threading.Lock()
_live_processes: set[subprocess.Popen[bytes]] = set()
# Temporary directories created here and not yet removed by cleanup().
_owned_dirs: set[Path] = set()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the process group the server leads (it was started with setsid)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # pragma: no cover - should not happen for our own child
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)


def _kill_leftover_servers() -> None:
    with _live_lock:
        procs = list(_live_processes)
        _live_processes.clear()
    for proc in procs:
        _signal_group(proc, signal.SIGKILL)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
    with _live_lock:
        dirs = list(_owned_dirs)
        _owned_dirs.clear()
    for directory in dirs:
        shutil.rmtree(directory, ignore_errors=True)


atexit.register(_kill_leftover_servers)


def _format_config_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---------------------------------------------------------------------------
# One server


class ZooKeeperServer:
    """One local ZooKeeper server process.

    Layout of ``data_dir`` (a fresh temporary directory by default, removed by
    :meth:`cleanup`)::

        data_dir/zoo.cfg          written on every start()
        data_dir/zookeeper.log    the server's stdout/stderr (appended to)
        data_dir/data/            ZooKeeper's dataDir (snapshots, txn logs, myid)

    The port is chosen once (a free one when ``port`` is None), so
    ``stop()``/``start()`` and ``kill()``/``start()`` bring the same server back
    on the same address with the same data.

    ``extra_config`` entries are added to (and override) the generated
    ``zoo.cfg``.  ``myid`` writes ``data/myid`` (needed for ensemble members).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        *,
        tick_time: int = 500,
        extra_config: Mapping[str, object] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        myid: int | None = None,
        jvm_flags: Sequence[str] | None = None,
        classpath: str | None = None,
        java: str | None = None,
    ) -> None:
        self._owns_dir = data_dir is None
        if data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="zkflags-zk-"))
            with _live_lock:
                _owned_dirs.add(self.data_dir)
        else:
            self.data_dir = Path(data_dir).resolve()
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.zk_data_dir = self.data_dir / DATA_SUBDIR
        self.config_path = self.data_dir / CONFIG_FILE_NAME
        self.log_path = Path(log_path).resolve() if log_path else self.data_dir / LOG_FILE_NAME
        self._port = port if port is not None else free_port()
        self.tick_time = tick_time
        self.extra_config: dict[str, object] = dict(extra_config or {})
        self.myid = myid
        self.jvm_flags: tuple[str, ...] = tuple(
            DEFAULT_JVM_FLAGS if jvm_flags is None else jvm_flags
        )
        self._classpath = classpath
        self._java = java
        self._proc: subprocess.Popen[bytes] | None = None
        self._detached = False
        self._paused = False
        self._log_offset = 0
        self._lock = threading.RLock()
        #: seconds the last successful start() took (exec to ready)
        self.last_start_duration: float | None = None

    # -- description ---------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def host(self) -> str:
        return _LOOPBACK

    @property
    def hosts(self) -> str:
        """Connection string for a client, ``"127.0.0.1:PORT"``."""
        return f"{_LOOPBACK}:{self._port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def is_running(self) -> bool:
        """True while the server process is alive (also when paused)."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def is_paused(self) -> bool:
        return self._paused and self.is_running

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<ZooKeeperServer {self.hosts} {state} dir={self.data_dir}>"

    def config(self) -> dict[str, str]:
        """The ``zoo.cfg`` contents this server is started with."""
        cfg: dict[str, object] = {
            "tickTime": self.tick_time,
            "dataDir": self.zk_data_dir,
            "clientPort": self._port,
            "clientPortAddress": _LOOPBACK,
            "maxClientCnxns": 0,
            "admin.enableServer": False,
            "4lw.commands.whitelist": "*",
        }
        cfg.update(self.extra_config)
        return {key: _format_config_value(value) for key, value in cfg.items()}

    def command(self) -> list[str]:
        """The command line start() runs."""
        java = self._java or find_java()
        classpath = self._classpath or find_classpath()
        return [
            java,
            *self.jvm_flags,
            # Used by Debian's /etc/zookeeper/conf/log4j.properties; harmless otherwise.
            "-Dzookeeper.root.logger=INFO,CONSOLE",
            f"-Dzookeeper.log.dir={self.data_dir}",
            "-cp",
            classpath,
            MAIN_CLASS,
            str(self.config_path),
        ]

    # -- talking to it -------------------------------------------------------

    def four_letter(self, cmd: str, timeout: float = 2.0) -> str:
        """Send a four letter word (``ruok``, ``srvr``, ``stat``, ``mntr``, ``wchc``...)."""
        return four_letter(_LOOPBACK, self._port, cmd, timeout)

    def mode(self, timeout: float = 2.0) -> str | None:
        """``"standalone"``, ``"leader"``, ``"follower"``..., or None when not serving."""
        try:
            return _parse_mode(self.four_letter("srvr", timeout))
        except OSError:
            return None

    def is_serving(self, timeout: float = 2.0) -> bool:
        """True when this port answers ``imok`` and reports a Mode."""
        try:
            if self.four_letter("ruok", timeout) != "imok":
                return False
        except OSError:
            return False
        return self.mode(timeout) is not None

    def _answers_from_our_data_dir(self) -> bool:
        try:
            conf = _parse_conf(self.four_letter("conf"))
        except OSError:
            return False
        data_dir = conf.get("dataDir", "")
        return bool(data_dir) and Path(data_dir).parent == self.zk_data_dir

    # -- lifecycle -----------------------------------------------------------

    def _write_files(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.zk_data_dir.mkdir(parents=True, exist_ok=True)
        lines = [f"{key}={value}" for key, value in self.config().items()]
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        if self.myid is not None:
            (self.zk_data_dir / "myid").write_text(f"{self.myid}\n", encoding="ascii")

    def log_tail(self, max_bytes: int = 6000, *, since_start: bool = True) -> str:
        """The end of the server's log (by default only what the last start() wrote)."""
        try:
            with open(self.log_path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                begin = max(self._log_offset if since_start else 0, size - max_bytes)
                fh.seek(begin)
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def launch(self, *, detach: bool = False) -> None:
        """Start the process without waiting for it to be ready (see :meth:`start`)."""
        with self._lock:
            if self.is_running:
                return
            cmd = self.command()  # raises ZooKeeperNotInstalled before touching anything
            try:
                if four_letter(_LOOPBACK, self._port, "ruok", timeout=1.0):
                    raise ZooKeeperStartError(
                        f"cannot start ZooKeeper on {self.hosts}: something already "
                        "answers on that port"
                    )
            except OSError:
                # Something accepts connections there but does not answer.
                raise ZooKeeperStartError(
                    f"cannot start ZooKeeper on {self.hosts}: the port is in use"
                ) from None
            self._write_files()
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "ab") as log:
                log.write(
                    f"\n===== zkserver: starting at {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                    f"{' '.join(cmd)}\n".encode()
                )
                log.flush()
                self._log_offset = log.tell()
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    close_fds=True,
                    # Own session, hence own process group: signals aimed at the
                    # test runner's group (Ctrl-C) do not hit it, a detached server
                    # survives the CLI exiting, and killpg() reaches it.
                    start_new_session=True,
                )
            self._proc = proc
            self._paused = False
            self._detached = detach
            with _live_lock:
                if detach:
                    _owned_dirs.discard(self.data_dir)  # it must outlive us
                else:
                    _live_processes.add(proc)

    def start(self, timeout: float = 30.0, *, wait: bool = True, detach: bool = False) -> None:
        """Start the server and wait until it serves.

        Ready means: ``ruok`` answers ``imok`` and ``srvr`` reports a Mode (for an
        ensemble member that needs a quorum).  Raises
        :class:`ZooKeeperStartError` (with the end of the log) when the process
        exits or is not ready within ``timeout`` (it is then killed), and
        :class:`ZooKeeperNotInstalled` when ZooKeeper/Java are missing.

        ``detach=True`` leaves the server running when this Python process
        exits (no atexit kill); used by the CLI.  Does nothing if already running.
        """
        with self._lock:
            if self.is_running:
                if self._paused:
                    self.resume()
                if wait:
                    self.wait_until_serving(timeout)
                return
            started = time.monotonic()
            self.launch(detach=detach)
            if wait:
                self.wait_until_serving(timeout)
                self.last_start_duration = time.monotonic() - started

    def wait_until_serving(self, timeout: float = 30.0) -> None:
        """Wait until the server answers ``imok`` and reports a Mode."""
        proc = self._proc
        if proc is None:
            raise ZooKeeperStartError(f"ZooKeeper on {self.hosts} was never started")
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                self._forget(proc)
                raise ZooKeeperStartError(
                    f"ZooKeeper on {self.hosts} exited with status {proc.returncode} "
                    f"during start-up; log {self.log_path}:\n{self.log_tail()}"
                )
            # Serving, and it is *our* server that answers on that port.
            if (
                self.is_serving(timeout=1.0)
                and self._answers_from_our_data_dir()
                and proc.poll() is None
            ):
                return
            if time.monotonic() >= deadline:
                modes = self.four_letter_safe("srvr")
                self.kill()
                raise ZooKeeperStartError(
                    f"ZooKeeper on {self.hosts} was not ready within {timeout} s "
                    f"(srvr: {modes.strip()!r}); log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def four_letter_safe(self, cmd: str, timeout: float = 2.0) -> str:
        """Like :meth:`four_letter` but returns ``""`` on any network error."""
        try:
            return self.four_letter(cmd, timeout)
        except OSError:
            return ""

    def _forget(self, proc: subprocess.Popen[bytes]) -> None:
        with _live_lock:
            _live_processes.discard(proc)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server gracefully: SIGTERM, then SIGKILL after ``timeout``; waits."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
                # A paused (SIGSTOPped) JVM only acts on SIGTERM once continued.
                _signal_group(proc, signal.SIGCONT)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait()
            self._after_exit(proc)

    def kill(self) -> None:
        """SIGKILL the server immediately (simulates a crash); waits for it to go."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
            self._after_exit(proc)

    def _after_exit(self, proc: subprocess.Popen[bytes]) -> None:
        self._forget(proc)
        self._paused = False
        # Keep self._proc (for returncode/pid inspection); is_running is False now.

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open but nothing is answered."""
        with self._lock:
            if not self.is_running:
                raise ZooKeeperError(f"ZooKeeper on {self.hosts} is not running")
            assert self._proc is not None
            _signal_group(self._proc, signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """SIGCONT a paused server."""
        with self._lock:
            if self._proc is not None:
                _signal_group(self._proc, signal.SIGCONT)
            self._paused = False

    def restart(self, timeout: float = 30.0) -> None:
        """stop() then start() on the same port and data."""
        self.stop()
        self.start(timeout)

    def cleanup(self) -> None:
        """Stop the server and remove its directory if this object created it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            with _live_lock:
                _owned_dirs.discard(self.data_dir)

    def __enter__(self) -> ZooKeeperServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


# ---------------------------------------------------------------------------
# Ensemble


class ZooKeeperEnsemble:
    """A quorum of ``size`` ZooKeeper servers on 127.0.0.1.

    ``servers[i]`` is a :class:`ZooKeeperServer` with ``myid == i + 1``.
    """

    def __init__(
        self,
        size: int = 3,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        tick_time: int = 500,
        init_limit: int = 10,
        sync_limit: int = 5,
        extra_config: Mapping[str, object] | None = None,
        jvm_flags: Sequence[str] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self._owns_dir = base_dir is None
        if base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="zkflags-ensemble-"))
            with _live_lock:
                _owned_dirs.add(self.base_dir)
        else:
            self.base_dir = Path(base_dir).resolve()
            self.base_dir.mkdir(parents=True, exist_ok=True)
        ports = free_ports(3 * size)
        client_ports = ports[:size]
        peer_lines = {
            f"server.{i + 1}": f"{_LOOPBACK}:{ports[size + 2 * i]}:{ports[size + 2 * i + 1]}"
            for i in range(size)
        }
        common: dict[str, object] = {
            "initLimit": init_limit,
            "syncLimit": sync_limit,
            **peer_lines,
        }
        common.update(extra_config or {})
        self.servers: list[ZooKeeperServer] = [
            ZooKeeperServer(
                self.base_dir / f"node{i + 1}",
                client_ports[i],
                tick_time=tick_time,
                extra_config=common,
                myid=i + 1,
                jvm_flags=jvm_flags,
            )
            for i in range(size)
        ]
        #: seconds the last successful start() took
        self.last_start_duration: float | None = None

    @property
    def size(self) -> int:
        return len(self.servers)

    @property
    def quorum_size(self) -> int:
        return self.size // 2 + 1

    @property
    def hosts(self) -> str:
        """Connection string naming every node, ``"127.0.0.1:P1,127.0.0.1:P2,..."``."""
        return ",".join(server.hosts for server in self.servers)

    def __repr__(self) -> str:
        return f"<ZooKeeperEnsemble {self.hosts} modes={self.modes()}>"

    def modes(self) -> list[str | None]:
        """The Mode of every node (None for a stopped or not serving node)."""
        return [s.mode(timeout=1.0) if s.is_running else None for s in self.servers]

    def leader_index(self) -> int | None:
        modes = self.modes()
        leaders = [i for i, mode in enumerate(modes) if mode == "leader"]
        return leaders[0] if len(leaders) == 1 else None

    def follower_indexes(self) -> list[int]:
        return [i for i, mode in enumerate(self.modes()) if mode == "follower"]

    def _parallel(self, fn: Callable[[ZooKeeperServer], object], indexes: Sequence[int]) -> None:
        errors: list[BaseException] = []

        def run(i: int) -> None:
            try:
                fn(self.servers[i])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in indexes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def start(self, timeout: float = 60.0) -> None:
        """Start every node in parallel; wait until all report leader/follower."""
        started = time.monotonic()
        deadline = started + timeout
        try:
            for server in self.servers:
                server.launch()
            for server in self.servers:
                server.wait_until_serving(max(0.5, deadline - time.monotonic()))
            self.wait_for_quorum(max(0.5, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        self.last_start_duration = time.monotonic() - started

    def wait_for_quorum(self, timeout: float = 30.0) -> int:
        """Wait until every running node is leader or follower, with exactly one leader.

        Returns the leader's index.  Raises :class:`TimeoutError` otherwise
        (e.g. fewer than a quorum of nodes running).
        """
        deadline = time.monotonic() + timeout
        while True:
            running = [i for i, s in enumerate(self.servers) if s.is_running]
            modes = self.modes()
            running_modes = [modes[i] for i in running]
            if (
                len(running) >= self.quorum_size
                and all(mode in ("leader", "follower") for mode in running_modes)
                and running_modes.count("leader") == 1
            ):
                return modes.index("leader")
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no quorum within {timeout} s: modes {modes} "
                    f"({len(running)} of {self.size} nodes running, {self.quorum_size} needed)"
                )
            time.sleep(0.05)

    def stop_node(self, index: int, timeout: float = 10.0) -> None:
        self.servers[index].stop(timeout)

    def kill_node(self, index: int) -> None:
        self.servers[index].kill()

    def start_node(self, index: int, wait: bool = True, timeout: float = 30.0) -> None:
        """(Re)start one node; with ``wait`` until it serves (needs a quorum)."""
        self.servers[index].start(timeout, wait=wait)

    def stop(self) -> None:
        self._parallel(lambda s: s.stop(), range(self.size))

    def cleanup(self) -> None:
        """Stop every node and remove the directory if this object created it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            with _live_lock:
                _owned_dirs.discard(self.base_dir)

    def __enter__(self) -> ZooKeeperEnsemble:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


# ---------------------------------------------------------------------------
# Command line: a persistent local node for development


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _pid_is_our_server(pid: int, config_path: Path) -> bool:
    """True if ``pid`` is alive (not a zombie) and is a ZooKeeper run with ``config_path``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if sys.platform.startswith("linux"):
            return False
        # No /proc: fall back to "is the pid alive".
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state = stat.rpartition(")")[2].split()[0] if ")" in stat else ""
    if state in ("Z", "X"):
        return False
    args = [arg.decode("utf-8", "replace") for arg in cmdline]
    return MAIN_CLASS in args and str(config_path) in args


def _find_server_pid(config_path: Path) -> int | None:
    """The pid of a live ZooKeeper started with ``config_path`` (Linux /proc scan)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if entry.isdigit() and _pid_is_our_server(int(entry), config_path):
            return int(entry)
    return None


def _configured_port(config_path: Path) -> int | None:
    try:
        for line in config_path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "clientPort":
                return int(value.strip())
    except (OSError, ValueError):
        pass
    return None


def _running_pid(directory: Path) -> int | None:
    """The pid of the server for ``directory``: from the pid file, else found in /proc."""
    config_path = directory / CONFIG_FILE_NAME
    pid = _read_pid(directory / PID_FILE_NAME)
    if pid is not None and _pid_is_our_server(pid, config_path):
        return pid
    if not config_path.exists():
        return None
    return _find_server_pid(config_path)


def _four_letter_or_empty(port: int, cmd: str) -> str:
    try:
        return four_letter(_LOOPBACK, port, cmd, timeout=2.0)
    except OSError:
        return ""


def _cli_start(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    port: int = args.port
    pid = _running_pid(directory)
    if pid is not None:
        running_port = _configured_port(directory / CONFIG_FILE_NAME)
        if running_port is not None and _four_letter_or_empty(running_port, "ruok") == "imok":
            note = "" if running_port == port else f" (not on {port}: stop it first to change)"
            print(
                f"ZooKeeper already running on {_LOOPBACK}:{running_port} "
                f"(pid {pid}, dir {directory}){note}"
            )
            if running_port == port:
                (directory / PID_FILE_NAME).write_text(f"{pid}\n")
                return 0
            return 1
        print(f"ZooKeeper process {pid} for {directory} exists but does not answer; stop it first")
        return 1
    try:
        answer = four_letter(_LOOPBACK, port, "conf", timeout=2.0)
    except OSError:
        answer = "?"
    if answer:
        # Something listens on the port although no server of ours is recorded.
        served = _parse_conf(answer).get("dataDir", "")
        if served and Path(served).parent == directory / DATA_SUBDIR:
            # Ours, but the pid file is gone: find the process and record it again.
            found = _find_server_pid(directory / CONFIG_FILE_NAME)
            if found is not None:
                (directory / PID_FILE_NAME).write_text(f"{found}\n")
            print(
                f"ZooKeeper already running on {_LOOPBACK}:{port} "
                f"(pid {found or 'unknown'}, dir {directory})"
            )
            return 0
        what = f"a ZooKeeper with dataDir {served}" if served else "another program"
        print(f"error: {_LOOPBACK}:{port} is already used by {what}", file=sys.stderr)
        return 1
    server = ZooKeeperServer(
        directory,
        port,
        tick_time=args.tick_time,
        # A long-lived node: purge old snapshots and transaction logs.
        extra_config={"autopurge.snapRetainCount": 3, "autopurge.purgeInterval": 1},
    )
    try:
        server.start(args.timeout, detach=True)
    except ZooKeeperStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ZooKeeperNotInstalled as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    assert server.pid is not None
    (directory / PID_FILE_NAME).write_text(f"{server.pid}\n")
    print(
        f"ZooKeeper running on {server.hosts} (pid {server.pid}, data {server.zk_data_dir}, "
        f"log {server.log_path}), started in {server.last_start_duration:.2f} s"
    )
    return 0


def _wait_gone(pid: int, config_path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_is_our_server(pid, config_path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _cli_stop(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    pid_file = directory / PID_FILE_NAME
    pid = _running_pid(directory)
    if pid is None:
        print(f"ZooKeeper not running (dir {directory})")
        pid_file.unlink(missing_ok=True)
        return 0
    config_path = directory / CONFIG_FILE_NAME
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGCONT)
    if not _wait_gone(pid, config_path, args.timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, config_path, 5.0)
    pid_file.unlink(missing_ok=True)
    print(f"ZooKeeper stopped (pid {pid})")
    return 0


def _cli_status(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    pid = _running_pid(directory)
    port = _configured_port(directory / CONFIG_FILE_NAME)
    if pid is None or port is None:
        print(f"ZooKeeper not running (dir {directory})")
        return 1
    mode = _parse_mode(_four_letter_or_empty(port, "srvr"))
    if mode is None:
        print(f"ZooKeeper process {pid} exists but {_LOOPBACK}:{port} is not serving")
        return 1
    print(f"ZooKeeper running on {_LOOPBACK}:{port} (pid {pid}, mode {mode}, dir {directory})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.zookeeper",
        description="Run a persistent local ZooKeeper node for development.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p_start = sub.add_parser("start", help="start a detached node (no-op if running)")
    p_start.add_argument("--dir", default=".zk", help="state directory (default: .zk)")
    p_start.add_argument("--port", type=int, default=2181, help="client port (default: 2181)")
    p_start.add_argument("--tick-time", type=int, default=2000, help="tickTime in ms")
    p_start.add_argument("--timeout", type=float, default=30.0)
    p_start.set_defaults(func=_cli_start)

    p_stop = sub.add_parser("stop", help="stop the node started with `start`")
    p_stop.add_argument("--dir", default=".zk")
    p_stop.add_argument("--timeout", type=float, default=10.0)
    p_stop.set_defaults(func=_cli_stop)

    p_status = sub.add_parser("status", help="exit 0 if the node is running and serving")
    p_status.add_argument("--dir", default=".zk")
    p_status.set_defaults(func=_cli_status)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
