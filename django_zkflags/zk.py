"""ZooKeeper I/O: the client, the tree layout, and versioned writes.

Tree under the root path of ``ZKFLAGS_URL``::

    <root>/flags/<name>   one JSON document per flag (the record an editor changes)
    <root>/snapshot       the materialized view of every flag (what processes watch)
    <root>/environments   environment parents and hosts pegged to an environment

Every write changes a flag znode *and* the snapshot in one ``multi()`` transaction: the
flag znode's version is the editor's optimistic lock, the snapshot's version serialises
writers. Later layers (environments, typed values) add keys to the documents and sibling
folders under the root; the two paths above keep their meaning.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    ConnectionClosedError,
    ConnectionLoss,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    NotReadOnlyCallError,
    OperationTimeoutError,
    RolledBackError,
    RuntimeInconsistency,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry
from kazoo.security import OPEN_ACL_UNSAFE, READ_ACL_UNSAFE, make_digest_acl

from .conf import ZooKeeperURL
from .rules import FlagRule, InvalidFlag, validate_environments_document, validate_name
from .snapshot import (
    CorruptSnapshot,
    decode_document,
    decode_payload,
    encode_document,
    encode_entries,
)

log = logging.getLogger("django_zkflags.zk")

FLAGS_DIR = "flags"
SNAPSHOT_NODE = "snapshot"
ENVIRONMENTS_NODE = "environments"

#: Errors that mean "ZooKeeper cannot be reached right now".
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionLoss,
    ConnectionClosedError,
    SessionExpiredError,
    OperationTimeoutError,
    KazooTimeoutError,
)


class FlagWriteError(Exception):
    """A write was refused or could not be made. Nothing was changed."""


READ_BACK_ERRORS: tuple[type[BaseException], ...] = (FlagWriteError, *UNAVAILABLE_ERRORS)


class ZooKeeperUnavailable(FlagWriteError):
    pass


class FlagConflict(FlagWriteError):
    def __init__(
        self, message: str, *, current: dict[str, Any] | None, current_version: int | None
    ):
        super().__init__(message)
        self.current = current
        self.current_version = current_version


class FlagTooLarge(FlagWriteError):
    pass


class PermissionDenied(FlagWriteError):
    pass


@dataclass(frozen=True)
class Paths:
    root: str

    @property
    def flags(self) -> str:
        return f"{self.root}/{FLAGS_DIR}"

    @property
    def snapshot(self) -> str:
        return f"{self.root}/{SNAPSHOT_NODE}"

    @property
    def environments(self) -> str:
        return f"{self.root}/{ENVIRONMENTS_NODE}"

    def flag(self, name: str) -> str:
        return f"{self.root}/{FLAGS_DIR}/{validate_name(name)}"


def gevent_patched() -> bool:
    """Is this a gevent-patched process (kazoo needs its gevent handler there)?"""
    import sys

    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("socket")


def _handler() -> Any:
    """kazoo's gevent handler in a gevent-patched process, its threading one otherwise."""
    if gevent_patched():
        from kazoo.handlers.gevent import SequentialGeventHandler

        return SequentialGeventHandler()
    return None


def make_client(
    url: ZooKeeperURL, *, session_timeout: float, reconnect_max_delay: float, **kwargs: Any
) -> KazooClient:
    """A client that reconnects quickly forever and authenticates with the URL's identity."""
    auth = [("digest", f"{url.username}:{url.password}")] if url.has_credentials else None
    return KazooClient(
        hosts=url.hosts,
        timeout=session_timeout,
        connection_retry=KazooRetry(
            max_tries=-1, delay=0.05, backoff=2, max_delay=reconnect_max_delay
        ),
        command_retry=None,
        auth_data=auth,
        handler=kwargs.pop("handler", None) or _handler(),
        **kwargs,
    )


def acl_for(url: ZooKeeperURL) -> list[Any]:
    """With credentials, only that identity may write; everybody may read."""
    if not url.has_credentials:
        return list(OPEN_ACL_UNSAFE)
    assert url.username is not None and url.password is not None
    return [make_digest_acl(url.username, url.password, all=True), *READ_ACL_UNSAFE]


@dataclass(frozen=True)
class WriteResult:
    name: str
    version: int | None  # None after a delete
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class FlagWriter:
    """Versioned writes of flags, each in one transaction with the snapshot."""

    #: Attempts when only the snapshot moved under us (another flag was written).
    SNAPSHOT_RETRIES = 20

    def __init__(
        self,
        client: KazooClient,
        url: ZooKeeperURL,
        *,
        timeout: float = 5.0,
        max_bytes: int = 1000 * 1000,
    ) -> None:
        self.client = client
        self.url = url
        self.paths = Paths(url.root)
        self.acl = acl_for(url)
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._layout_ready = False

    # -- reading ---------------------------------------------------------------------------

    def read_flag(self, name: str) -> tuple[dict[str, Any] | None, int | None]:
        """The flag's document and znode version as ZooKeeper holds them now.

        A znode that does not hold a valid document (written by hand, say) is returned as
        ``{"corrupt": reason}`` so that an editor can still overwrite it.
        """
        self._wait_connected()
        try:
            data, stat = self._call(self.client.get_async(self.paths.flag(name)))
        except NoNodeError:
            return None, None
        try:
            doc = FlagRule.from_document(decode_document(data), name=name).to_document()
        except InvalidFlag as exc:
            return {"corrupt": str(exc)}, stat.version
        return doc, stat.version

    def read_snapshot_payload(self) -> tuple[dict[str, Any], int | None]:
        """The snapshot's ``{"flags", "environments"}`` and its znode version."""
        self._wait_connected()
        try:
            data, stat = self._call(self.client.get_async(self.paths.snapshot))
        except NoNodeError:
            return decode_payload(None), None
        return decode_payload(data), stat.version

    def read_snapshot_entries(self) -> tuple[dict[str, Any], int | None]:
        payload, version = self.read_snapshot_payload()
        return payload["flags"], version

    def read_environments(self) -> tuple[dict[str, Any], int | None]:
        """The environments document (``{"parents": {...}, "hosts": {...}}``) and version."""
        self._wait_connected()
        try:
            data, stat = self._call(self.client.get_async(self.paths.environments))
        except NoNodeError:
            return {"parents": {}, "hosts": {}}, None
        return validate_environments_document(decode_document(data)), stat.version

    def list_flag_nodes(self) -> list[str]:
        self._wait_connected()
        try:
            return sorted(self._call(self.client.get_children_async(self.paths.flags)))
        except NoNodeError:
            return []

    # -- writing ---------------------------------------------------------------------------

    def write(self, doc: dict[str, Any], expected_version: int | None) -> WriteResult:
        """Create (``expected_version=None``) or update a flag from the version the editor saw."""
        rule = FlagRule.from_document(doc)  # validate before anything leaves the process
        doc = rule.to_document()
        return self._commit(rule.name, doc, expected_version)

    def delete(self, name: str, expected_version: int) -> WriteResult:
        return self._commit(validate_name(name), None, expected_version)

    def _commit(self, name: str, doc: dict[str, Any] | None, expected: int | None) -> WriteResult:
        self._wait_connected()
        self.ensure_layout()
        path = self.paths.flag(name)
        for _attempt in range(self.SNAPSHOT_RETRIES):
            current, current_version = self.read_flag(name)
            self._check_expected(name, expected, current, current_version)
            entries, environments, snapshot_version = self._read_for_write()
            new_version = None
            if doc is None:
                entries.pop(name, None)
            else:
                new_version = 0 if expected is None else expected + 1
                entries[name] = {**doc, "version": new_version}
            payload = encode_entries(entries, environments)
            flag_bytes = encode_document(doc) if doc is not None else b""
            if len(payload) + len(flag_bytes) > self.max_bytes:
                raise FlagTooLarge(
                    f"Saving {name!r} would make the snapshot {len(payload)} bytes, over the "
                    f"{self.max_bytes}-byte limit of one ZooKeeper write. Remove unused flags "
                    "or long user lists (use groups)."
                )
            tx = self.client.transaction()
            if doc is None:
                assert expected is not None
                tx.delete(path, version=expected)
            elif expected is None:
                tx.create(path, flag_bytes, acl=self.acl)
            else:
                tx.set_data(path, flag_bytes, version=expected)
            self._write_snapshot_in(tx, payload, snapshot_version)
            pending = tx.commit_async()
            try:
                results = self._call(pending, raw=True)
            except UNAVAILABLE_ERRORS as exc:
                if self._withdraw(pending):
                    raise ZooKeeperUnavailable(
                        f"ZooKeeper did not answer in time ({self.url.hosts}); nothing was saved."
                    ) from exc
                return self._resolve_unknown_outcome(name, doc, expected, current, exc)
            flag_result, snapshot_result = results
            if not isinstance(flag_result, Exception) and not isinstance(
                snapshot_result, Exception
            ):
                return WriteResult(name, new_version, current, doc)
            if isinstance(flag_result, (BadVersionError, NodeExistsError, NoNodeError)):
                current, current_version = self.read_flag(name)
                self._check_expected(name, expected, current, current_version)
            if isinstance(flag_result, NoAuthError) or isinstance(snapshot_result, NoAuthError):
                raise PermissionDenied(
                    "ZooKeeper refused the write (ACL): check the credentials in ZKFLAGS_URL"
                )
            # Only the snapshot moved (another flag was saved meanwhile): go again.
            if not isinstance(
                snapshot_result,
                (BadVersionError, NodeExistsError, RolledBackError, RuntimeInconsistency),
            ):
                raise FlagWriteError(f"ZooKeeper refused the write: {snapshot_result!r}")
        raise ZooKeeperUnavailable(
            f"Could not save {name!r}: the snapshot kept changing ({self.SNAPSHOT_RETRIES} tries)"
        )

    def _check_expected(
        self, name: str, expected: int | None, current: Any, current_version: int | None
    ) -> None:
        if expected is None and current_version is not None:
            raise FlagConflict(
                f"Flag {name!r} already exists in ZooKeeper (version {current_version}); "
                "nothing was overwritten.",
                current=current,
                current_version=current_version,
            )
        if expected is not None and current_version != expected:
            what = (
                "was deleted" if current_version is None else f"is now at version {current_version}"
            )
            raise FlagConflict(
                f"Flag {name!r} was changed by someone else while you were editing it: you "
                f"started from version {expected}, ZooKeeper {what}. Your change was not "
                "saved; review the current values and try again.",
                current=current,
                current_version=current_version,
            )

    def _read_for_write(self) -> tuple[dict[str, Any], dict[str, Any], int | None]:
        """The snapshot's flag entries, environments document and version, to rewrite."""
        try:
            payload, version = self.read_snapshot_payload()
            return payload["flags"], payload["environments"], version
        except CorruptSnapshot:
            log.error("Snapshot znode is corrupt; rebuilding it from the source znodes")
            entries = self.entries_from_flag_nodes()[0]
            environments = self.read_environments()[0]
            _data, stat = self._call(self.client.get_async(self.paths.snapshot))
            return entries, environments, stat.version

    def write_environments(self, doc: dict[str, Any], expected_version: int | None) -> WriteResult:
        """Replace the environments document (environment parents and pegged hosts), from
        the version the editor read (None: there is none yet), with the snapshot."""
        doc = validate_environments_document(doc)
        self._wait_connected()
        self.ensure_layout()
        data = encode_document(doc)
        for _attempt in range(self.SNAPSHOT_RETRIES):
            before, current_version = self.read_environments()
            if current_version != expected_version:
                raise FlagConflict(
                    "The environments were changed by someone else (ZooKeeper is at version "
                    f"{current_version}, you started from {expected_version}); nothing was "
                    "saved.",
                    current=before,
                    current_version=current_version,
                )
            entries, _old, snapshot_version = self._read_for_write()
            payload = encode_entries(entries, doc)
            if len(payload) + len(data) > self.max_bytes:
                raise FlagTooLarge("The environments document makes the snapshot too large")
            tx = self.client.transaction()
            if expected_version is None:
                tx.create(self.paths.environments, data, acl=self.acl)
            else:
                tx.set_data(self.paths.environments, data, version=expected_version)
            self._write_snapshot_in(tx, payload, snapshot_version)
            pending = tx.commit_async()
            try:
                first, second = self._call(pending, raw=True)
            except UNAVAILABLE_ERRORS as exc:
                if self._withdraw(pending):
                    raise ZooKeeperUnavailable(
                        "ZooKeeper did not answer; nothing was saved."
                    ) from exc
                raise ZooKeeperUnavailable(
                    "ZooKeeper did not answer; reload the environments to see whether the "
                    "change was applied."
                ) from exc
            if not isinstance(first, Exception) and not isinstance(second, Exception):
                version = 0 if expected_version is None else expected_version + 1
                return WriteResult("@environments", version, before, doc)
            if isinstance(first, NoAuthError) or isinstance(second, NoAuthError):
                raise PermissionDenied(
                    "ZooKeeper refused the write (ACL): check the credentials in ZKFLAGS_URL"
                )
            # The document moved (the next round reports it) or only the snapshot did.
        raise ZooKeeperUnavailable("Could not save the environments: the snapshot kept changing")

    def _write_snapshot_in(self, tx: Any, payload: bytes, version: int | None) -> None:
        """Add the snapshot write to ``tx``: create it, or replace the version just read."""
        if version is None:
            tx.create(self.paths.snapshot, payload, acl=self.acl)
        else:
            tx.set_data(self.paths.snapshot, payload, version=version)

    def _withdraw(self, pending: Any) -> bool:
        """Take a request that was never sent out of kazoo's queue.

        kazoo queues requests while SUSPENDED and sends them after reconnecting; a write we
        reported as failed must not be applied later behind the editor's back.
        """
        queue = getattr(self.client, "_queue", None)
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

    def _resolve_unknown_outcome(
        self, name: str, doc: Any, expected: int | None, before: Any, exc: BaseException
    ) -> WriteResult:
        """The connection broke during commit: read back to learn whether it applied."""
        log.warning("Connection lost while saving %r; reading back to learn the outcome", name)
        try:
            self._wait_connected()
            self._call(self.client.sync_async(self.paths.flag(name)))
            current, version = self.read_flag(name)
        except READ_BACK_ERRORS:
            raise ZooKeeperUnavailable(
                f"ZooKeeper connection lost while saving {name!r}; the outcome is unknown "
                "until it returns. Reload the flag before trying again."
            ) from exc
        if doc is None and current is None:
            return WriteResult(name, None, before, None)
        expected_after = 0 if expected is None else expected + 1
        if doc is not None and version == expected_after and current == doc:
            return WriteResult(name, version, before, doc)
        raise ZooKeeperUnavailable(
            f"ZooKeeper connection lost while saving {name!r}; the change was not applied."
        ) from exc

    def entries_from_flag_nodes(self) -> tuple[dict[str, Any], dict[str, str]]:
        """Read every flag znode: (valid entries with versions, errors by name)."""
        entries: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name in self.list_flag_nodes():
            try:
                data, stat = self._call(self.client.get_async(f"{self.paths.flags}/{name}"))
            except NoNodeError:
                continue
            try:
                doc = FlagRule.from_document(decode_document(data), name=name).to_document()
            except InvalidFlag as exc:
                errors[name] = str(exc)
                continue
            entries[name] = {**doc, "version": stat.version}
        return entries, errors

    def rebuild_snapshot(self) -> dict[str, str]:
        """Rewrite the snapshot from the flag znodes (repairs drift). Returns bad znodes.

        A flag znode that does not parse keeps its previous snapshot entry.
        """
        self._wait_connected()
        self.ensure_layout()
        for _attempt in range(self.SNAPSHOT_RETRIES):
            entries, errors = self.entries_from_flag_nodes()
            try:
                old_payload, version = self.read_snapshot_payload()
                old_entries, old_environments = old_payload["flags"], old_payload["environments"]
            except CorruptSnapshot:
                old_entries, old_environments = {}, {}
                version = self._call(self.client.exists_async(self.paths.snapshot)).version
            for name in errors:
                if name in old_entries:
                    entries[name] = old_entries[name]
            try:
                environments = self.read_environments()[0]
            except InvalidFlag as exc:
                errors["(environments)"] = str(exc)
                environments = old_environments
            payload = encode_entries(entries, environments)
            if len(payload) > self.max_bytes:  # the server would drop the connection
                raise FlagTooLarge(
                    f"The rebuilt snapshot would be {len(payload)} bytes, over the "
                    f"{self.max_bytes}-byte limit of one ZooKeeper write; nothing was written. "
                    "Shrink or delete the largest flag znodes first."
                )
            try:
                if version is None:
                    self._call(self.client.create_async(self.paths.snapshot, payload, acl=self.acl))
                else:
                    self._call(self.client.set_async(self.paths.snapshot, payload, version=version))
                return errors
            except (BadVersionError, NodeExistsError):
                continue
        raise FlagWriteError("Could not rebuild the snapshot: it kept changing")

    def ensure_layout(self) -> None:
        if self._layout_ready:
            return
        path = ""
        for part in [*self.url.root.strip("/").split("/"), FLAGS_DIR]:
            path += "/" + part
            try:
                self._call(self.client.create_async(path, b"", acl=self.acl))
            except NodeExistsError:
                pass
        self._layout_ready = True

    # -- plumbing --------------------------------------------------------------------------

    def _wait_connected(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self.client.connected:
            if time.monotonic() >= deadline:
                raise ZooKeeperUnavailable(
                    f"ZooKeeper is unreachable ({self.url.hosts}); nothing was saved."
                )
            time.sleep(0.02)

    def _call(self, async_result: Any, *, raw: bool = False) -> Any:
        """Wait for a kazoo call; unless ``raw``, turn connection errors into ZooKeeperUnavailable."""
        try:
            try:
                return async_result.get(timeout=self.timeout)
            except self.client.handler.timeout_exception as exc:  # threading or gevent
                raise ConnectionLoss(f"no answer within {self.timeout}s") from exc
        except NotReadOnlyCallError:
            raise ZooKeeperUnavailable(
                "ZooKeeper is read-only (no quorum); nothing was saved."
            ) from None
        except NoAuthError:
            raise PermissionDenied(
                "ZooKeeper refused the write (ACL): check the credentials in ZKFLAGS_URL"
            ) from None
        except UNAVAILABLE_ERRORS as exc:
            if raw:
                raise
            raise ZooKeeperUnavailable(
                f"ZooKeeper is unreachable ({self.url.hosts}): {exc!r}; nothing was saved."
            ) from exc
