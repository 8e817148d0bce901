"""A small TCP proxy for fault injection in tests (standard library only).

Put it between a client (e.g. kazoo) and a server (e.g. ZooKeeper) and cut,
block or stall the network without touching either::

    proxy = TcpProxy("127.0.0.1", zk.port).start()
    client = KazooClient(proxy.hosts)
    proxy.drop_all()   # reset every connection: client sees a connection loss
    proxy.block()      # partition: connections are reset, new ones too
    proxy.unblock()
    proxy.pause()      # sockets stay open but no byte moves: pause longer than the
    proxy.resume()     # session timeout to make ZooKeeper expire the session
    proxy.stop()

All forwarding happens on one background (daemon) thread using ``selectors``;
the control methods hand their work to that thread and return once it is done,
so e.g. after ``drop_all()`` returns the connections are closed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import queue
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

__all__ = ["TcpProxy"]

logger = logging.getLogger(__name__)

_BUFFER_LIMIT = 1 << 20  # bytes buffered per direction before we stop reading
_RECV_SIZE = 65536
_CONNECT_IN_PROGRESS = {errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY, errno.EAGAIN}


def _abort(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST (SO_LINGER 0), like a cut connection."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _tune(sock: socket.socket) -> None:
    sock.setblocking(False)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Pipe:
    """One proxied connection: client socket <-> upstream socket."""

    __slots__ = (
        "client",
        "upstream",
        "connecting",
        "to_upstream",
        "to_client",
        "client_eof",
        "upstream_eof",
        "client_shut",
        "upstream_shut",
    )

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.connecting = True
        self.to_upstream = bytearray()
        self.to_client = bytearray()
        self.client_eof = False  # client sent FIN
        self.upstream_eof = False  # upstream sent FIN
        self.client_shut = False  # we sent FIN to the client
        self.upstream_shut = False  # we sent FIN upstream

    @property
    def finished(self) -> bool:
        return self.client_shut and self.upstream_shut


class TcpProxy:
    """Forward connections from ``127.0.0.1:listen_port`` to ``target_host:target_port``.

    ``listen_port=None`` picks a free port at :meth:`start`; the port is kept
    when the proxy is stopped and started again.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        listen_port: int | None = None,
        *,
        listen_host: str = "127.0.0.1",
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self._port = listen_port or 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._commands: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]] = (
            queue.SimpleQueue()
        )
        self._stopping = False
        self._paused = False
        self._blocked = False
        self._pipes: list[_Pipe] = []
        self._selector: selectors.BaseSelector | None = None
        self._registered: dict[socket.socket, int] = {}
        self._target_addr: tuple[int, Any] | None = None
        #: connections accepted since creation (including refused ones while blocked)
        self.accepted_count = 0
        #: connections reset by drop_all()/block()
        self.dropped_count = 0

    # -- description ---------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("TcpProxy has no port yet: call start() first")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return (self.listen_host, self.port)

    @property
    def hosts(self) -> str:
        """``"127.0.0.1:PORT"``, e.g. for ``KazooClient(hosts=proxy.hosts)``."""
        return f"{self.listen_host}:{self.port}"

    @property
    def is_running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def is_paused(self) -> bool:
        return self._paused

    @property
    def is_blocked(self) -> bool:
        return self._blocked

    @property
    def connection_count(self) -> int:
        """Number of currently open proxied connections."""
        with self._lock:
            return len(self._pipes)

    def __repr__(self) -> str:
        port = self._port or "?"
        return (
            f"<TcpProxy {self.listen_host}:{port} -> {self.target_host}:{self.target_port}"
            f" connections={self.connection_count}"
            f"{' paused' if self._paused else ''}{' blocked' if self._blocked else ''}>"
        )

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> TcpProxy:
        """Bind and start forwarding; returns ``self``."""
        if self.is_running:
            return self
        infos = socket.getaddrinfo(self.target_host, self.target_port, type=socket.SOCK_STREAM)
        family, _type, _proto, _canon, sockaddr = infos[0]
        self._target_addr = (family, sockaddr)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.listen_host, self._port))
            listener.listen(128)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._port = listener.getsockname()[1]
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._selector = selectors.DefaultSelector()
        self._registered = {}
        self._thread = threading.Thread(
            target=self._run, name=f"TcpProxy:{self._port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection and the listener; the thread is gone on return."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._wake()
        thread.join(timeout)
        if thread.is_alive():  # pragma: no cover - would be a bug
            logger.warning("TcpProxy thread %s did not stop within %s s", thread.name, timeout)
        self._thread = None

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- fault injection -----------------------------------------------------

    def drop_all(self) -> int:
        """Reset (RST) every current connection; returns how many were dropped.

        Clients see a connection loss and reconnect through the proxy.
        """
        result: list[int] = []
        self._call(lambda: result.append(self._abort_all()))
        return result[0] if result else 0

    def block(self) -> None:
        """Reset every connection and every new one until :meth:`unblock`."""

        def do() -> None:
            self._blocked = True
            self._abort_all()

        self._call(do)

    def unblock(self) -> None:
        self._call(lambda: setattr(self, "_blocked", False))

    def pause(self) -> None:
        """Stop moving bytes (in both directions) but keep every socket open.

        New connections are still accepted (and stall).  Pausing longer than a
        ZooKeeper session timeout makes the server expire the session.
        """
        self._call(lambda: setattr(self, "_paused", True))

    def resume(self) -> None:
        """Forward again, including what was buffered while paused."""
        self._call(lambda: setattr(self, "_paused", False))

    # -- internals: control --------------------------------------------------

    def _wake(self) -> None:
        sock = self._wake_w
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.send(b"x")

    def _call(self, fn: Callable[[], None], timeout: float = 5.0) -> None:
        """Run ``fn`` on the proxy thread (or right here if it is not running)."""
        thread = self._thread
        if thread is None or not thread.is_alive() or thread is threading.current_thread():
            fn()
            return
        done = threading.Event()
        self._commands.put((fn, done))
        self._wake()
        deadline = time.monotonic() + timeout
        while not done.wait(0.05):
            if not thread.is_alive():
                # The proxy stopped meanwhile: nobody else will run it.
                self._run_commands()
                return
            if time.monotonic() >= deadline:
                raise TimeoutError("TcpProxy thread did not respond")

    def _run_commands(self) -> None:
        while True:
            try:
                fn, done = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            except Exception:  # pragma: no cover - defensive
                logger.exception("TcpProxy command failed")
            finally:
                done.set()

    # -- internals: event loop -----------------------------------------------

    def _run(self) -> None:
        selector = self._selector
        listener = self._listener
        wake_r = self._wake_r
        assert selector is not None and listener is not None and wake_r is not None
        selector.register(listener, selectors.EVENT_READ, None)
        selector.register(wake_r, selectors.EVENT_READ, None)
        try:
            while not self._stopping:
                self._run_commands()
                self._update_interest()
                events = selector.select(timeout=0.5)
                for key, mask in events:
                    sock = key.fileobj
                    if sock is wake_r:
                        with contextlib.suppress(OSError):
                            while wake_r.recv(4096):
                                pass
                    elif sock is listener:
                        self._accept()
                    else:
                        pipe = key.data
                        if pipe is not None and pipe in self._pipes:
                            self._handle(pipe, sock, mask)  # type: ignore[arg-type]
        except Exception:  # pragma: no cover - defensive: never die noisily
            logger.exception("TcpProxy loop crashed")
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._abort_all(count=False)
        self._run_commands()  # release anybody waiting on a command
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._listener = self._wake_r = self._wake_w = None
        if self._selector is not None:
            with contextlib.suppress(Exception):
                self._selector.close()
        self._selector = None
        self._registered = {}

    def _accept(self) -> None:
        listener = self._listener
        assert listener is not None
        while True:
            try:
                client, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE, ECONNABORTED
                logger.debug("TcpProxy accept failed: %s", exc)
                return
            self.accepted_count += 1
            if self._blocked:
                self.dropped_count += 1
                _abort(client)
                continue
            _tune(client)
            assert self._target_addr is not None
            family, sockaddr = self._target_addr
            upstream = socket.socket(family, socket.SOCK_STREAM)
            _tune(upstream)
            err = upstream.connect_ex(sockaddr)
            if err not in (0, *_CONNECT_IN_PROGRESS):
                logger.debug("TcpProxy upstream connect failed: %s", errno.errorcode.get(err))
                _abort(client)
                _abort(upstream)
                continue
            with self._lock:
                self._pipes.append(_Pipe(client, upstream))

    def _interest(self, pipe: _Pipe, sock: socket.socket) -> int:
        if self._paused:
            return 0
        events = 0
        if sock is pipe.upstream:
            if pipe.connecting:
                return selectors.EVENT_WRITE
            if not pipe.upstream_eof and len(pipe.to_client) < _BUFFER_LIMIT:
                events |= selectors.EVENT_READ
            if pipe.to_upstream:
                events |= selectors.EVENT_WRITE
        else:
            if not pipe.client_eof and len(pipe.to_upstream) < _BUFFER_LIMIT:
                events |= selectors.EVENT_READ
            if pipe.to_client:
                events |= selectors.EVENT_WRITE
        return events

    def _update_interest(self) -> None:
        selector = self._selector
        assert selector is not None
        for pipe in list(self._pipes):
            for sock in (pipe.client, pipe.upstream):
                wanted = self._interest(pipe, sock)
                current = self._registered.get(sock, 0)
                if wanted == current:
                    continue
                if current and wanted:
                    selector.modify(sock, wanted, pipe)
                elif wanted:
                    selector.register(sock, wanted, pipe)
                else:
                    selector.unregister(sock)
                if wanted:
                    self._registered[sock] = wanted
                else:
                    self._registered.pop(sock, None)

    def _forget_socket(self, sock: socket.socket) -> None:
        if self._registered.pop(sock, 0) and self._selector is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(sock)

    def _close_pipe(self, pipe: _Pipe, *, abort: bool) -> None:
        with self._lock:
            if pipe in self._pipes:
                self._pipes.remove(pipe)
        for sock in (pipe.client, pipe.upstream):
            self._forget_socket(sock)
            if abort:
                _abort(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.close()

    def _abort_all(self, *, count: bool = True) -> int:
        with self._lock:
            pipes = list(self._pipes)
        for pipe in pipes:
            self._close_pipe(pipe, abort=True)
        if count:
            self.dropped_count += len(pipes)
        return len(pipes)

    def _handle(self, pipe: _Pipe, sock: socket.socket, mask: int) -> None:
        try:
            if sock is pipe.upstream and pipe.connecting:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    # Target down: the client sees its connection reset.
                    self._close_pipe(pipe, abort=True)
                    return
                pipe.connecting = False
                return
            if sock is pipe.client:
                inbound, outbound = pipe.to_upstream, pipe.to_client
            else:
                inbound, outbound = pipe.to_client, pipe.to_upstream
            if mask & selectors.EVENT_READ:
                data = sock.recv(_RECV_SIZE)
                if data:
                    inbound += data
                elif sock is pipe.client:
                    pipe.client_eof = True
                else:
                    pipe.upstream_eof = True
            if mask & selectors.EVENT_WRITE and outbound:
                sent = sock.send(outbound)
                del outbound[:sent]
            self._propagate_eof(pipe)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            # Reset by a peer or similar: pass the failure on to the other side.
            logger.debug("TcpProxy connection error: %s", exc)
            self._close_pipe(pipe, abort=True)

    def _propagate_eof(self, pipe: _Pipe) -> None:
        if pipe.client_eof and not pipe.to_upstream and not pipe.upstream_shut:
            if pipe.connecting:
                return
            pipe.upstream_shut = True
            with contextlib.suppress(OSError):
                pipe.upstream.shutdown(socket.SHUT_WR)
        if pipe.upstream_eof and not pipe.to_client and not pipe.client_shut:
            pipe.client_shut = True
            with contextlib.suppress(OSError):
                pipe.client.shutdown(socket.SHUT_WR)
        if pipe.finished:
            self._close_pipe(pipe, abort=False)
