"""ACLs: with digest credentials in ZKFLAGS_URL only that identity may write; all may read.

ZooKeeper does not inherit ACLs, so every znode the app creates (each level of the root,
``flags/``, every flag znode, the snapshot) must carry them itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.security import ACL, Id, Permissions, make_digest_acl_credential

from django_zkflags import flag_is_active_for_user, runtime
from django_zkflags.cache import store
from django_zkflags.client import Paths, Requests, acl_for, make_client
from django_zkflags.conf import parse_url
from django_zkflags.exceptions import PermissionDenied
from django_zkflags.reader import TreeReader, read_view
from django_zkflags.rules import FlagRule
from django_zkflags.snapshot import EMPTY, SHARDS, encode_entries, shard_of
from django_zkflags.writer import FlagWriter

from ..conftest import served_version, wait_until

USER, PASSWORD = "alice", "secret"


class AclSite:
    def __init__(self, hosts: str, root: str) -> None:
        self.hosts = hosts
        self.root = root  # two levels, both created by the app
        self.url = f"zk://{USER}:{PASSWORD}@{hosts}{root}"


@pytest.fixture
def site(zk_server: Any, settings: Any) -> Iterator[AclSite]:
    root = f"/acl-{uuid.uuid4().hex[:10]}/app"
    acl_site = AclSite(zk_server.hosts, root)
    settings.ZKFLAGS_URL = acl_site.url
    runtime.start(wait=10.0)
    try:
        yield acl_site
    finally:
        runtime.stop()
        store.publish(EMPTY)


@pytest.fixture
def clients(site: AclSite, kazoo_clients: Callable[..., KazooClient]) -> dict[str, KazooClient]:
    return {
        "owner": kazoo_clients(site.hosts, auth=(USER, PASSWORD)),
        "bob": kazoo_clients(site.hosts, auth=("bob", "hunter2")),
        "anonymous": kazoo_clients(site.hosts),
    }


def _write(name: str, **rules: Any) -> int:
    flags = runtime.get_runtime()
    stored = flags.reader().flag(name)
    base = stored.document() or {"name": name, "everyone": None}
    result = flags.writer().write_flag(FlagRule.from_document({**base, **rules}), stored.version)
    assert result.version is not None
    wait_until(lambda: served_version(name) == result.version)
    return result.version


EXPECTED_ACL = {
    ("digest", make_digest_acl_credential(USER, PASSWORD), "ALL"),
    ("world", "anyone", "READ"),
}


def _acl_set(acls: list[ACL]) -> set[tuple[str, str, str]]:
    out = set()
    for acl in acls:
        if acl.perms == Permissions.ALL:
            perms = "ALL"
        elif acl.perms == Permissions.READ:
            perms = "READ"
        else:
            perms = str(acl.perms)
        out.add((acl.id.scheme, acl.id.id, perms))
    return out


def test_every_znode_the_app_creates_carries_the_acl(site, clients):
    _write("alpha", everyone=True)
    _write("beta", percent=25.0)
    top = site.root.rsplit("/", 1)[0]
    paths = [
        top,
        site.root,
        f"{site.root}/flags",
        f"{site.root}/flags/alpha",
        f"{site.root}/flags/beta",
        f"{site.root}/snapshot",
        f"{site.root}/shards",
        *(f"{site.root}/shards/{shard_of(name, SHARDS)}" for name in ("alpha", "beta")),
    ]
    for path in paths:
        acls, _stat = clients["owner"].get_acls(path)
        assert _acl_set(acls) == EXPECTED_ACL, (path, acls)
        # others see the same ACL, with the digest hash masked by ZooKeeper
        for who in ("bob", "anonymous"):
            masked = {
                (s, i.split(":")[0], p) for s, i, p in _acl_set(clients[who].get_acls(path)[0])
            }
            assert masked == {("digest", USER, "ALL"), ("world", "anyone", "READ")}, (path, who)
    # nothing open to the world for writing anywhere under the root
    assert all(
        acl.id != Id("world", "anyone") or acl.perms == Permissions.READ
        for path in paths
        for acl in clients["owner"].get_acls(path)[0]
    )


def test_other_identities_read_but_cannot_write(site, clients):
    version = _write("alpha", everyone=True)
    flag = f"{site.root}/flags/alpha"
    snapshot = f"{site.root}/snapshot"
    owner_flag = clients["owner"].get(flag)
    owner_snapshot = clients["owner"].get(snapshot)
    forged = encode_entries({"alpha": {"name": "alpha", "everyone": False, "version": 99}})
    for who in ("bob", "anonymous"):
        client = clients[who]
        # reading is open: the same bytes the owner sees
        assert client.get(flag)[0] == owner_flag[0]
        assert client.get(snapshot)[0] == owner_snapshot[0]
        assert client.get_children(f"{site.root}/flags") == ["alpha"]
        with pytest.raises(NoAuthError):
            client.set(flag, b'{"name":"alpha","everyone":false}')
        with pytest.raises(NoAuthError):
            client.set(snapshot, forged)
        with pytest.raises(NoAuthError):  # nor the shard the flag is in
            client.set(f"{site.root}/shards/{shard_of('alpha', SHARDS)}", forged)
        with pytest.raises(NoAuthError):
            client.delete(flag)
        with pytest.raises(NoAuthError):
            client.create(f"{site.root}/flags/intruder", b"{}")
        with pytest.raises(NoAuthError):
            client.delete(snapshot)
        with pytest.raises(NoAuthError):  # nor loosen the ACL (needs ADMIN)
            client.set_acls(flag, [ACL(Permissions.ALL, Id("world", "anyone"))])
    # nothing changed in ZooKeeper, nor in this process
    assert clients["owner"].get(flag)[1].version == version == 0
    assert clients["owner"].get(snapshot)[0] == owner_snapshot[0]
    assert read_view(clients["owner"], site.root)["flags"]["alpha"]["everyone"] is True
    assert flag_is_active_for_user(None, "alpha") is True
    # and the app itself keeps writing
    assert _write("alpha", everyone=False) == 1
    assert flag_is_active_for_user(None, "alpha") is False
    assert _write("gamma", everyone=True) == 0
    assert runtime.status()["last_error"] is None


@pytest.mark.parametrize(
    "url_auth", [f"{USER}:wrong-password@", "bob:hunter2@", ""], ids=["wrong", "other", "none"]
)
def test_writer_with_other_credentials_gets_permission_denied(site, clients, url_auth):
    _write("alpha", everyone=True)
    url = parse_url(f"zk://{url_auth}{site.hosts}{site.root}")
    client = make_client(url, session_timeout=10.0, reconnect_max_delay=1.0)
    client.start(timeout=10)
    try:
        requests, paths = Requests(client, url, timeout=3.0), Paths(url.root)
        writer = FlagWriter(requests, paths, acl_for(url))
        before = clients["owner"].get(f"{site.root}/snapshot")
        stored = TreeReader(requests, paths).flag("alpha")  # reading works
        doc, version = stored.document(), stored.version
        assert doc is not None and doc["everyone"] is True and version == 0
        with pytest.raises(PermissionDenied):
            writer.write_flag(FlagRule.from_document({**doc, "everyone": False}), version)
        with pytest.raises(PermissionDenied):
            writer.write_flag(FlagRule("newflag", everyone=True), None)
        with pytest.raises(PermissionDenied):
            writer.delete_flag("alpha", version)
        with pytest.raises(PermissionDenied):
            writer.rebuild_snapshot()
        after = clients["owner"].get(f"{site.root}/snapshot")
        assert after[1].version == before[1].version and after[0] == before[0]
        assert clients["owner"].get_children(f"{site.root}/flags") == ["alpha"]
        assert client.connected  # a refusal is not a connection problem
    finally:
        client.stop()
        client.close()
    assert flag_is_active_for_user(None, "alpha") is True
    assert _write("alpha", everyone=False) == 1
