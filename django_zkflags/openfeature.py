"""An OpenFeature provider (the ``openfeature-sdk`` package: ``pip install
django-zkflags[openfeature]``), and a middleware that makes the request's user the
evaluation context::

    from openfeature import api
    from django_zkflags.openfeature import ZKFlagsProvider

    api.set_provider(ZKFlagsProvider())
    client = api.get_client()
    client.get_boolean_value("new-checkout", False)          # in a request, with the middleware
    client.get_integer_value("search.page-size", 20)

**Booleans** are the flag's rules, evaluated by the one evaluator for the evaluation
context: ``targeting_key`` is the user's id; the attributes ``authenticated`` (default: True
when there is a targeting key), ``is_staff``, ``is_superuser`` and ``groups`` (group
**ids**, the ones the rules hold: answering needs no database) make a duck-typed user. A
context with ``authenticated`` False is an anonymous visitor whose ``targeting_key`` is its
id: it gets that id's percentage bucket, the one ``flag_is_active`` gives the visitor with
that cookie id. The context :class:`OpenFeatureContextMiddleware` sets for a request is
answered exactly as ``flag_is_active(request, name)`` (the request's snapshot, its user's
group ids fetched once, an anonymous visitor's cookie id, minted when a percentage needs
one). The reason maps to OpenFeature's (:data:`REASONS`); the flag metadata carries the
znode ``version``, django-zkflags' own ``reason`` and its ``detail`` (and ``environment``,
``bucket``, ``threshold``, ``prerequisite`` when they apply).

**Strings, integers, floats and objects** are the flag's live value (``get_value``): the
same for every context, reason STATIC. A flag ZooKeeper does not hold is
``FLAG_NOT_FOUND`` (a flag declared in ``ZKFLAGS["FLAGS"]`` answers its declared default,
reason DEFAULT); a value of another type is ``TYPE_MISMATCH`` (an integer is a float too);
a flag without a value answers the default, reason DEFAULT. Errors return the default.

**Events**: READY once this process has a snapshot from ZooKeeper (``initialize`` waits
for it up to ``startup_timeout``, and otherwise fails with ``PROVIDER_NOT_READY`` and
sends READY when it comes); CONFIGURATION_CHANGED with ``flags_changed`` for every change
this process applies (the ``flag_changed`` signal); STALE when the runtime's ZooKeeper
client is disconnected (SUSPENDED or LOST: the last snapshot is still served), READY when
it is connected again. The events are sent from the threads they happen on (the watcher's,
kazoo's): the SDK runs its handlers on an executor of its own.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.signals import setting_changed
from django.utils.functional import LazyObject

try:
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.event import ProviderEventDetails
    from openfeature.exception import ErrorCode, ProviderNotReadyError
    from openfeature.flag_evaluation import FlagResolutionDetails, Reason
    from openfeature.provider import AbstractProvider, Metadata
    from openfeature.transaction_context import (
        ContextVarsTransactionContextPropagator,
        get_transaction_context,
        set_transaction_context,
        set_transaction_context_propagator,
    )
except ImportError as exc:  # pragma: no cover - the optional extra is missing
    raise ImportError(
        "django_zkflags.openfeature needs the OpenFeature SDK: "
        "pip install 'django-zkflags[openfeature]' (openfeature-sdk)"
    ) from exc

from . import conf, runtime
from .cache import store
from .evaluation import (
    Explanation,
    RequestFlags,
    aload_group_ids,
    aload_lazy,
    explain_in,
    needs_group_ids,
    read_anonymous_id,
    user_group_ids,
)
from .rules import NO_IDS, thaw_value
from .signals import flag_changed
from .snapshot import Snapshot

__all__ = [
    "REASONS",
    "OpenFeatureContextMiddleware",
    "ZKFlagsProvider",
    "context_for",
]

NAME = "django-zkflags"

#: django-zkflags' reasons (``explain``) as OpenFeature's.
REASONS: Mapping[str, Reason] = {
    "everyone": Reason.STATIC,  # off for everyone: DISABLED (see _reason)
    "override": Reason.STATIC,
    "superusers": Reason.TARGETING_MATCH,
    "staff": Reason.TARGETING_MATCH,
    "authenticated": Reason.TARGETING_MATCH,
    "users": Reason.TARGETING_MATCH,
    "groups": Reason.TARGETING_MATCH,
    "prerequisite": Reason.TARGETING_MATCH,
    "percent": Reason.SPLIT,
    "missing": Reason.DEFAULT,
    "no-match": Reason.DEFAULT,
}

T = TypeVar("T")


# -- who a context stands for ---------------------------------------------------------------


class ContextUser:
    """A duck-typed user for the rules, made from an evaluation context.

    Its group ids are the context's ``groups``; without them, those of the request's own
    user when the context is the one the middleware set (fetched once, as the rules fetch
    them), else none.
    """

    __slots__ = ("pk", "is_authenticated", "is_staff", "is_superuser", "groups", "source")

    def __init__(
        self,
        pk: Any,
        *,
        authenticated: bool,
        staff: bool = False,
        superuser: bool = False,
        groups: frozenset[int] | None = None,
        source: Any = None,
    ) -> None:
        self.pk = pk
        self.is_authenticated = authenticated
        self.is_staff = staff
        self.is_superuser = superuser
        self.groups = groups
        self.source = source

    @property
    def _zkflags_group_ids(self) -> Iterable[int]:  # what evaluation.user_group_ids reads
        if self.groups is not None:
            return self.groups
        if self.source is not None:
            return user_group_ids(self.source)
        return NO_IDS

    def __repr__(self) -> str:
        return f"<ContextUser {self.pk!r} authenticated={self.is_authenticated}>"


@dataclass(frozen=True)
class _RequestSubject:
    """What :class:`OpenFeatureContextMiddleware` keeps for the request it serves."""

    request: Any
    user: Any  # loaded, never a lazy object
    targeting_key: str | None


_current: ContextVar[_RequestSubject | None] = ContextVar(
    "django_zkflags.openfeature.request", default=None
)


def _flag(attributes: Mapping[str, Any], key: str, default: bool) -> bool:
    value = attributes.get(key, default)
    if not isinstance(value, bool):
        raise _InvalidContext(f"the attribute {key!r} must be true or false, got {value!r}")
    return value


def _group_ids(value: Any) -> frozenset[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, frozenset, set)):
        raise _InvalidContext(f"the attribute 'groups' must be a list of group ids, got {value!r}")
    ids = set()
    for item in value:
        if isinstance(item, str) and item.isdigit():
            item = int(item)
        if not isinstance(item, int) or isinstance(item, bool):
            raise _InvalidContext(
                f"the attribute 'groups' holds group ids (integers), got {item!r}"
            )
        ids.add(item)
    return frozenset(ids)


class _InvalidContext(ValueError):
    pass


def _pk(targeting_key: str) -> Any:
    """A user id as the rules hold it: an integer when it is one."""
    return int(targeting_key) if targeting_key.isdigit() else targeting_key


def _subject(
    context: EvaluationContext | None,
) -> tuple[Snapshot, Any, Any, RequestFlags | None, str | None]:
    """(snapshot, user, request, request flags, anonymous id) to answer ``context`` for."""
    context = context or EvaluationContext()
    attributes = context.attributes or {}
    key = context.targeting_key or None
    linked = _current.get()
    if linked is not None and linked.targeting_key != key:
        linked = None  # another subject than the request's
    flags = getattr(linked.request, "flags", None) if linked is not None else None
    flags = flags if isinstance(flags, RequestFlags) else None
    snapshot = flags.snapshot if flags is not None else store.current
    request = linked.request if linked is not None else None
    if _flag(attributes, "authenticated", key is not None):
        if key is None:
            raise _InvalidContext("an authenticated context needs a targeting_key (the user id)")
        groups = attributes.get("groups")
        source = linked.user if linked is not None and groups is None else None
        user = ContextUser(
            _pk(key),
            authenticated=True,
            staff=_flag(attributes, "is_staff", False),
            superuser=_flag(attributes, "is_superuser", False),
            groups=None if groups is None else _group_ids(groups),
            source=source if getattr(source, "is_authenticated", False) else None,
        )
        return snapshot, user, request, flags, None
    # An anonymous visitor: its id is the targeting key (else the request's, as the checks
    # find it, when the context is the request's).
    return snapshot, ContextUser(None, authenticated=False), request, flags, key


# -- the provider -----------------------------------------------------------------------------


class ZKFlagsProvider(AbstractProvider):
    """OpenFeature provider answering from this process's snapshot (see the module's
    docstring). One per process is enough; it uses the process's runtime (started by
    ``initialize`` if ``AppConfig.ready`` did not)."""

    def __init__(self, startup_timeout: float | None = None) -> None:
        super().__init__()
        self.startup_timeout = startup_timeout
        self._lock = threading.RLock()  # the state below, and the order of the events
        self._announce = False  # initialize is over: the events are this provider's to send
        self._loaded = False  # READY was sent (by the SDK or here) for a first snapshot
        self._stale = False  # disconnected (STALE sent if announcing)
        self._client: Any = None  # the kazoo client listened to
        self._runtime: runtime.FlagRuntime | None = None  # the runtime followed
        self._closed = threading.Event()
        self._wake = threading.Event()  # a snapshot from ZooKeeper was published
        self._uid = f"zkflags-openfeature-{id(self)}"

    def get_metadata(self) -> Metadata:
        return Metadata(name=NAME)

    # -- lifecycle ------------------------------------------------------------------------

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Follow the runtime, and wait (up to ``startup_timeout``, by default
        ``ZKFLAGS["STARTUP_TIMEOUT"]``) for its first snapshot from ZooKeeper; when none
        came, fail with PROVIDER_NOT_READY (flags are answered meanwhile from the disk copy
        or the defaults) and send READY when it comes."""
        self._closed.clear()
        flag_changed.connect(self._on_flags_changed, weak=False, dispatch_uid=self._uid)
        setting_changed.connect(self._on_setting_changed, weak=False, dispatch_uid=self._uid)
        _providers.add(self)
        current = runtime.start(wait=0)
        self._follow(current)
        timeout = self.startup_timeout
        if timeout is None:
            timeout = float(conf.get("STARTUP_TIMEOUT"))
        loaded = current.wait_loaded(timeout)
        with self._lock:
            self._announce = True
            if loaded or current.loaded.is_set():
                self._loaded = True
                return  # the SDK sends READY
        threading.Thread(
            target=self._wait_loaded, name="zkflags-openfeature-ready", daemon=True
        ).start()
        raise ProviderNotReadyError(
            f"no snapshot from ZooKeeper within {timeout:g}s; answering from "
            f"{store.base.source} flags until one comes"
        )

    def shutdown(self) -> None:
        """Stop sending events (the runtime itself is the app's: it keeps running)."""
        self._closed.set()
        self._wake.set()
        flag_changed.disconnect(dispatch_uid=self._uid)
        setting_changed.disconnect(dispatch_uid=self._uid)
        _providers.discard(self)
        with self._lock:
            client, self._client = self._client, None
            self._announce = self._loaded = self._stale = False
        if client is not None:
            client.remove_listener(self._on_state)

    def _follow(self, current: runtime.FlagRuntime) -> None:
        """Listen to the connection state of ``current``'s client (only it): kazoo's public
        ``add_listener``, on the client the runtime exposes."""
        with self._lock:
            old, self._client = self._client, current.client
            self._runtime = current
        if old is current.client:
            return
        if old is not None:
            old.remove_listener(self._on_state)
        current.client.add_listener(self._on_state)

    def _wait_loaded(self) -> None:
        """After a failed initialize: READY once the runtime has a snapshot from ZooKeeper.
        Not at once: the SDK sends the failed initialize's PROVIDER_ERROR just after it
        raised, and READY must come after it."""
        if self._closed.wait(0.1):
            return
        while not self._closed.is_set():
            followed = self._runtime
            if followed is not None and followed.loaded.is_set():
                with self._lock:
                    if self._closed.is_set() or self._loaded:
                        return
                    self._loaded = True
                    if not self._stale:
                        self.emit_provider_ready(ProviderEventDetails(message="first snapshot"))
                return
            self._wake.wait(0.2)
            self._wake.clear()

    # kazoo's connection thread: a state change, an event sent, nothing else.
    def _on_state(self, state: str) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            if state in ("SUSPENDED", "LOST"):
                if not self._stale:
                    self._stale = True
                    if self._announce:
                        self.emit_provider_stale(
                            ProviderEventDetails(message=f"ZooKeeper connection {state.lower()}")
                        )
            elif state == "CONNECTED" and self._stale:
                self._stale = False
                if self._announce and self._loaded:
                    self.emit_provider_ready(ProviderEventDetails(message="reconnected"))

    # The watcher's thread (or whoever changed an override or declared flags).
    def _on_flags_changed(
        self, sender: Any, names: frozenset[str], snapshot: Snapshot, **kwargs: Any
    ) -> None:
        if snapshot.source == "zookeeper":
            self._wake.set()
        with self._lock:
            if self._announce and self._loaded and not self._closed.is_set():
                self.emit_provider_configuration_changed(
                    ProviderEventDetails(flags_changed=sorted(names))
                )

    def _on_setting_changed(self, *, setting: str, **kwargs: Any) -> None:
        # After runtime's own receiver (connected first): a new ZooKeeper location is a
        # new runtime, with a new client.
        if setting in conf.URL_SETTINGS and not self._closed.is_set():
            self._follow(runtime.get_runtime())

    # -- booleans: the rules ---------------------------------------------------------------

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        try:
            snapshot, user, request, flags, anonymous_id = _subject(evaluation_context)
        except _InvalidContext as exc:
            return _error(default_value, ErrorCode.INVALID_CONTEXT, str(exc))
        return self._boolean(snapshot, flag_key, default_value, user, request, flags, anonymous_id)

    async def resolve_boolean_details_async(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        try:
            snapshot, user, request, flags, anonymous_id = _subject(evaluation_context)
        except _InvalidContext as exc:
            return _error(default_value, ErrorCode.INVALID_CONTEXT, str(exc))
        source = getattr(user, "source", None)
        if source is not None and needs_group_ids(snapshot.flags.get(flag_key), source):
            await aload_group_ids(source)  # the sync query, with the async ORM
        return self._boolean(snapshot, flag_key, default_value, user, request, flags, anonymous_id)

    def _boolean(
        self,
        snapshot: Snapshot,
        name: str,
        default: bool,
        user: Any,
        request: Any,
        flags: RequestFlags | None,
        anonymous_id: str | None,
    ) -> FlagResolutionDetails[bool]:
        why = explain_in(snapshot, name, user, request, flags, anonymous_id)
        if why.reason == "missing" and not why.declared:
            return _error(default, ErrorCode.FLAG_NOT_FOUND, f"no flag {name!r} in ZooKeeper")
        return FlagResolutionDetails(
            value=why.active,
            reason=_reason(why),
            variant="on" if why.active else "off",
            flag_metadata=_metadata(why),
        )

    # -- everything else: the live value ---------------------------------------------------

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        return _value(
            flag_key, default_value, "a string", lambda v: v if isinstance(v, str) else None
        )

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        return _value(flag_key, default_value, "an integer", _integer)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return _value(flag_key, default_value, "a number", _float)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Any,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Any]:
        return _value(flag_key, default_value, "an object or a list", _object)


#: Every initialised provider of this process (weakly), to follow the runtime after fork.
_providers: weakref.WeakSet[ZKFlagsProvider] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # runtime's own hook ran first (registered at its import): the child's runtime is new.
    for provider in list(_providers):
        provider._lock = threading.RLock()  # another thread may have held it at fork time
        provider._client = None
        if not provider._closed.is_set():
            provider._follow(runtime.get_runtime())


os.register_at_fork(after_in_child=_after_fork_in_child)


def _reason(why: Explanation) -> str:
    if why.reason == "everyone" and not why.active:
        return Reason.DISABLED
    return REASONS[why.reason]


def _metadata(why: Explanation) -> dict[str, bool | int | float | str]:
    metadata: dict[str, bool | int | float | str] = {"reason": why.reason, "detail": why.detail}
    for key in ("version", "environment", "bucket", "threshold", "prerequisite"):
        value = getattr(why, key)
        if value is not None:
            metadata[key] = value
    if why.declared:
        metadata["declared"] = True
    return metadata


def _error(default: T, code: ErrorCode, message: str) -> FlagResolutionDetails[T]:
    return FlagResolutionDetails(
        value=default, reason=Reason.ERROR, error_code=code, error_message=message
    )


def _value(
    name: str, default: T, kind: str, convert: Callable[[Any], Any]
) -> FlagResolutionDetails[T]:
    snapshot = store.current
    rule = snapshot.flags.get(name)
    if rule is None:
        return _error(default, ErrorCode.FLAG_NOT_FOUND, f"no flag {name!r} in ZooKeeper")
    declared = rule.version is None and store.declared.get(name) is rule
    metadata: dict[str, bool | int | float | str] = {}
    if rule.version is not None:
        metadata["version"] = rule.version
    if declared:
        metadata["declared"] = True
    if rule.value is None:
        metadata["detail"] = f"flag {name!r} has no value"
        return FlagResolutionDetails(value=default, reason=Reason.DEFAULT, flag_metadata=metadata)
    value = convert(rule.value)
    if value is None:
        return _error(
            default,
            ErrorCode.TYPE_MISMATCH,
            f"flag {name!r} holds {type(thaw_value(rule.value)).__name__}, not {kind}",
        )
    environment = rule.overridden_in("value", snapshot.chain)
    if environment is not None:
        metadata["environment"] = environment
    return FlagResolutionDetails(
        value=value, reason=Reason.DEFAULT if declared else Reason.STATIC, flag_metadata=metadata
    )


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _object(value: Any) -> Any:
    return thaw_value(value) if isinstance(value, (Mapping, tuple)) else None


# -- the request's user as the evaluation context ---------------------------------------------


def context_for(user: Any, request: Any = None) -> EvaluationContext:
    """The evaluation context of a Django user (loaded, not lazy), as the middleware sets
    it: ``targeting_key`` its pk and ``authenticated``, ``is_staff``, ``is_superuser``;
    for an anonymous user, ``authenticated`` False and the targeting key the visitor's id
    (``request.flags``' or its cookie's), if it has one. Group ids are left out (the
    provider fetches them for the request's own user only when a flag has group rules):
    add ``groups`` to answer for another user's groups without a request."""
    if user is not None and user.is_authenticated:
        return EvaluationContext(
            targeting_key=str(user.pk),
            attributes={
                "authenticated": True,
                "is_staff": bool(getattr(user, "is_staff", False)),
                "is_superuser": bool(getattr(user, "is_superuser", False)),
            },
        )
    anonymous_id = None
    if request is not None:
        flags = getattr(request, "flags", None)
        anonymous_id = flags.anonymous_id if isinstance(flags, RequestFlags) else None
        anonymous_id = anonymous_id or read_anonymous_id(request)
    return EvaluationContext(targeting_key=anonymous_id, attributes={"authenticated": False})


def ensure_transaction_context() -> None:
    """Install the SDK's contextvars transaction-context propagator, unless one that keeps
    contexts is installed already (the SDK's default is a no-op)."""
    probe = EvaluationContext(targeting_key="django-zkflags-probe")
    before = get_transaction_context()
    set_transaction_context(probe)
    if get_transaction_context() is probe:
        set_transaction_context(before)
    else:
        set_transaction_context_propagator(ContextVarsTransactionContextPropagator())


class OpenFeatureContextMiddleware:
    """Makes the request's user the OpenFeature evaluation context of everything evaluated
    while the request is served (the SDK's transaction context, propagated with
    contextvars: installed here when the SDK's no-op propagator is in place), so
    ``client.get_boolean_value(name, False)`` answers as ``flag_is_active(request, name)``.

    Put it after AuthenticationMiddleware and FlagMiddleware. It loads ``request.user``
    (``await request.auser()`` on an async stack, no thread hop). The context it set is
    taken away when the response is returned.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        ensure_transaction_context()

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        entered = _enter(request, getattr(request, "user", None))
        try:
            return self.get_response(request)
        finally:
            _leave(entered)

    async def __acall__(self, request: Any) -> Any:
        auser = getattr(request, "auser", None)
        user = await auser() if auser is not None else getattr(request, "user", None)
        if auser is None and isinstance(user, LazyObject):  # Django 4.2: no request.auser()
            user = await aload_lazy(user)
        entered = _enter(request, user)
        try:
            return await self.get_response(request)
        finally:
            _leave(entered)


def _enter(request: Any, user: Any) -> tuple[EvaluationContext, Any]:
    context = context_for(user, request)
    before = get_transaction_context()
    set_transaction_context(context)
    token = _current.set(_RequestSubject(request, user, context.targeting_key))
    return before, token


def _leave(entered: tuple[EvaluationContext, Any]) -> None:
    before, token = entered
    _current.reset(token)
    set_transaction_context(before)
