"""Every place django-zkflags reaches into kazoo's internals, and why.

Checked against kazoo 2.10 and 2.11.0 (the newest release as of this writing). Each
function degrades to doing nothing if the attribute it needs is gone, so a kazoo upgrade
loses a workaround, never the process.
"""

from __future__ import annotations

import atexit
import re
from typing import Any

import kazoo.protocol.serialization as _serialization
from kazoo.client import KazooClient

_AUTH = getattr(_serialization, "Auth", None)
_CONNECT = getattr(_serialization, "Connect", None)
_SESSION_PASSWORD = re.compile(r"(session_passwd: )b?'?[0-9a-fA-F]+'?")


def withdraw_queued_request(client: KazooClient, pending: Any) -> bool:
    """Take a request that was never sent out of kazoo's send queue (``client._queue``).

    kazoo queues requests made while SUSPENDED and sends them after reconnecting; a write
    reported to the editor as failed must not be applied later behind their back. Returns
    True when it was withdrawn (so it was never sent), False when it may have been sent.
    """
    queue = getattr(client, "_queue", None)
    if queue is None:
        return False
    for item in list(queue):
        if item[1] is pending:
            try:
                queue.remove(item)
            except ValueError:  # the connection thread took it meanwhile
                return False
            return True
    return False


def forget_exit_hook(client: KazooClient) -> None:
    """kazoo registers its handler's ``stop`` with atexit when the client starts; that hook
    waits for the client's threads. When we give up on a client that would not close (or on
    the parent's client in a forked child), it must not block interpreter exit."""
    atexit.unregister(client.handler.stop)


def abandon_in_forked_child(client: KazooClient) -> None:
    """Forget the parent's client in a forked child without touching the parent's session.

    Threads do not survive fork(), but greenlets do: under gevent the parent's connection
    loop (``client._connection._connection_routine``) is still scheduled in the child and
    would read, and ping, on the socket it shares with the parent, stealing the parent's
    replies. Kill it before it runs again (``client._stopped`` first, so that it does not
    reconnect with the parent's session); that closes only this process's copy of the socket.
    """
    forget_exit_hook(client)
    connection = getattr(client, "_connection", None)
    routine = getattr(connection, "_connection_routine", None)
    stopped = getattr(client, "_stopped", None)
    if routine is not None and hasattr(routine, "kill") and stopped is not None:
        stopped.set()
        routine.kill(block=False)


def forget_last_zxid(client: KazooClient) -> None:
    """Make the client's next connection attempt claim it has seen nothing (zxid 0).

    kazoo sends the last zxid it saw when it connects; a server whose history is shorter
    (its data directory was wiped, or the client was pointed at a new ensemble) refuses
    every such attempt ("has seen zxid 0x9b our last zxid is 0x0", kazoo issue #42), and
    kazoo retries forever. ``last_zxid`` is a plain attribute kazoo also resets itself when
    a session expires.
    """
    if hasattr(client, "last_zxid"):
        client.last_zxid = 0


def masked_packet(packet: Any, mask: str) -> Any:
    """A packet kazoo is about to log, with its credentials masked.

    kazoo's connection logs every request it sends at DEBUG ("Sending request(xid=%s): %s",
    the packet's namedtuple ``repr``) and what it reads at level 5, through the client's
    logger (``kazoo.client``). Checked in kazoo 2.11.0's source: ``Auth(auth_type, scheme,
    auth)`` carries ``user:password`` on every (re)connection (masked as ``user:<mask>``);
    ``Connect`` carries the session password (masked whole). Anything else is returned as it
    is; so is everything if kazoo renames these classes (the value-based masking of
    :mod:`django_zkflags.redaction` still applies).
    """
    if _AUTH is not None and isinstance(packet, _AUTH):
        user, colon, _ = str(packet.auth).partition(":")
        shown = f"{user}:{mask}" if packet.scheme == "digest" and colon else mask
        return packet._replace(auth=shown)
    if _CONNECT is not None and isinstance(packet, _CONNECT) and any(packet.passwd or b""):
        return packet._replace(passwd=mask.encode())
    return packet


def mask_session_password(message: str, mask: str) -> str:
    """kazoo 2.11 logs the session password, hexlified, at level 5 ("session_passwd: %s"):
    with the session id it lets another client take the session over."""
    if "session_passwd" not in message:
        return message
    return _SESSION_PASSWORD.sub(lambda match: match.group(1) + mask, message)
