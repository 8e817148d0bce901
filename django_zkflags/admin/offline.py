"""The admin while ZooKeeper is away: how long a save or a page waits for it, and what this
process last saw (its snapshot), shown read-only meanwhile.

A person is waiting on an admin page, so the admin waits ``ZKFLAGS["ADMIN_WRITE_TIMEOUT"]``
(3 s) for a connection before saying ZooKeeper is unreachable, where commands and code wait
``WRITE_TIMEOUT``. A page opened while this process already knows ZooKeeper is away (it
watches and is not connected) does not wait at all.
"""

from __future__ import annotations

from typing import Any

from .. import conf, runtime
from ..cache import store
from ..client import Requests
from ..rules import FlagRule, InvalidFlag, validate_environments_document
from ..snapshot import CorruptSnapshot, decode_file_payload

#: The default of ``ZKFLAGS["ADMIN_WRITE_TIMEOUT"]``.
ADMIN_WRITE_TIMEOUT = 3.0


def admin_write_timeout() -> float:
    """``ZKFLAGS["ADMIN_WRITE_TIMEOUT"]``: seconds an admin save, or a page that reads
    ZooKeeper, waits for a connection."""
    return float(conf.get_config().get("ADMIN_WRITE_TIMEOUT", ADMIN_WRITE_TIMEOUT))


def known_away() -> bool:
    """Does this process know ZooKeeper is away now (it watches, and is not connected)?"""
    status = runtime.status()
    return bool(status.get("watching")) and not status.get("connected")


def page_wait() -> float:
    """How long a page waits to read ZooKeeper: not at all during a known outage."""
    return 0.0 if known_away() else admin_write_timeout()


def wait_for_zookeeper(timeout: float) -> None:
    """Return once this process is connected to ZooKeeper; raise ZooKeeperUnavailable
    (naming the hosts and the wait) after ``timeout`` seconds."""
    the_runtime = runtime.get_runtime()
    the_runtime.connect()
    Requests(the_runtime.client, the_runtime.url, timeout).wait_connected()


def last_seen_flag(name: str) -> FlagRule | None:
    """Flag ``name`` as this process's last snapshot holds it (as stored, before this
    process's environment overrides; its ``version`` is the znode version), or None."""
    rule = store.base.flags.get(name)
    if rule is None:
        return None
    return rule.base


def last_seen_environments() -> dict[str, Any] | None:
    """The environments document this process last saw: the one its snapshot carries,
    else the one in its snapshot file; None when neither has one."""
    base = store.base
    document = getattr(base, "environments", None) if base.source != "empty" else None
    if document is None:
        document = _environments_on_disk()
    if document is None:
        return None
    try:
        return validate_environments_document(document)
    except InvalidFlag:
        return None


def _environments_on_disk() -> dict[str, Any] | None:
    snapshot_file = runtime.get_runtime().snapshot_file
    limit = runtime.max_snapshot_bytes()
    found = snapshot_file.load(limit) if snapshot_file is not None else None
    if found is None:
        return None
    try:
        return decode_file_payload(found[0], limit)["environments"]  # type: ignore[no-any-return]
    except CorruptSnapshot:
        return None
