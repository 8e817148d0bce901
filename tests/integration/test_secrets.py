"""Secrets stay secret (issue 8, item 8), against a real ZooKeeper: kazoo's DEBUG log of an
authenticated connection, and the password given apart from the URL (ZKFLAGS_PASSWORD).

The unit side (the 500 page, e-mails, checks, the disk copy): tests/unit/test_secrets.py.
"""

from __future__ import annotations

import logging
import uuid
from binascii import hexlify
from collections.abc import Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.security import ACL, Id, Permissions

from django_zkflags import conf, runtime
from django_zkflags.cache import store
from django_zkflags.client import make_client
from django_zkflags.redaction import digest
from django_zkflags.rules import FlagRule
from django_zkflags.snapshot import EMPTY

from ..conftest import flag_doc

PASSWORD = "s3cr3tPW-int7"


@pytest.fixture
def root() -> str:
    return f"/secrets-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def stop_runtime() -> Iterator[None]:
    yield
    runtime.stop()
    store.publish(EMPTY)


def kazoo_messages(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(("kazoo", "myapp"))]


def test_kazoo_debug_log_of_an_authenticated_connection(
    zk_server, settings, root, caplog, stop_runtime
) -> None:
    """kazoo 2.11 logs, through ``kazoo.client``, the Auth packet with the password at
    DEBUG on every connection, the digest in each Create's ACL and in GetACL answers, and at
    level 5 the session password. All of it is masked; the packets are still logged."""
    caplog.set_level(1, logger="kazoo.client")
    settings.ZKFLAGS_URL = f"zk://alice:{PASSWORD}@{zk_server.hosts}{root}"
    flags = runtime.start(wait=10.0)
    assert flags.client.connected
    result = flags.writer().write_flag(FlagRule.from_document(flag_doc("f", everyone=True)), None)
    assert result.version == 0
    acls, _ = flags.client.get_acls(f"{root}/flags/f")
    assert Id("digest", f"alice:{digest('alice', PASSWORD)}") in [acl.id for acl in acls]
    session_password = hexlify(flags.client.client_id[1]).decode()

    # A client with a logger of its own, and one made outside the app with other
    # credentials: the filter is on the loggers, the Auth packet masked whoever sent it.
    own = make_client(
        conf.get_url(),
        session_timeout=10.0,
        reconnect_max_delay=1.0,
        logger=logging.getLogger("myapp.zookeeper"),
    )
    caplog.set_level(logging.DEBUG, logger="myapp.zookeeper")
    other = KazooClient(hosts=zk_server.hosts, auth_data=[("digest", "bob:hunter2-xyz")])
    for client in (own, other):
        client.start(timeout=10)
        client.stop()
        client.close()

    messages = kazoo_messages(caplog)
    print(f"\n{len(messages)} kazoo log records captured")
    for hidden in (PASSWORD, digest("alice", PASSWORD), session_password, "hunter2-xyz"):
        assert not [m for m in messages if hidden in m]
        assert hidden not in caplog.text  # as the handler formatted them
    sent_auth = "Sending request(xid=-4): Auth(auth_type=0, scheme='digest', auth='alice:***')"
    assert sum(sent_auth in m for m in messages) == 2  # the app's client and `own`
    assert any("auth='bob:***'" in m for m in messages)
    assert any("Create(" in m and "id=Id(scheme='digest', id='alice:***')" in m for m in messages)
    assert any("Received response" in m and "id='alice:***'" in m for m in messages)  # GetACL
    assert any("Session created" in m and "session_passwd: ***" in m for m in messages)
    assert any(
        r.name == "myapp.zookeeper" and "alice:***" in r.getMessage() for r in caplog.records
    )


def test_password_apart_from_the_url_authenticates(zk_server, settings, root, stop_runtime) -> None:
    """ZKFLAGS_URL names the user only; the password comes from ZKFLAGS_PASSWORD: the app
    writes with that identity, and the znodes are writable by it alone."""
    settings.ZKFLAGS_URL = f"zk://alice@{zk_server.hosts}{root}"
    settings.ZKFLAGS_PASSWORD = PASSWORD
    flags = runtime.start(wait=10.0)
    flags.writer().write_flag(FlagRule.from_document(flag_doc("f", everyone=True)), None)
    path = f"{root}/flags/f"
    acls, _ = flags.client.get_acls(path)
    assert acls == [
        ACL(Permissions.ALL, Id("digest", f"alice:{digest('alice', PASSWORD)}")),
        ACL(Permissions.READ, Id("world", "anyone")),
    ]
    clients = {
        "anonymous": KazooClient(hosts=zk_server.hosts),
        "wrong": KazooClient(hosts=zk_server.hosts, auth_data=[("digest", "alice:wrong")]),
        "alice": KazooClient(hosts=zk_server.hosts, auth_data=[("digest", f"alice:{PASSWORD}")]),
    }
    try:
        for client in clients.values():
            client.start(timeout=10)
        for name in ("anonymous", "wrong"):
            with pytest.raises(NoAuthError):
                clients[name].set(path, b"{}")
        clients["alice"].set_acls(path, acls)  # the owner may
    finally:
        for client in clients.values():
            client.stop()
            client.close()
