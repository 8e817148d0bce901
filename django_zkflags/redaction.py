"""Keep the ZooKeeper password out of what gets shown: log records, error pages, messages.

What is hidden is every form in which the app's password can appear: as written in
``ZKFLAGS_URL`` (percent-encoded or not), decoded, as ``repr`` escapes it, and the
ZooKeeper digest of the identity (``base64(sha1(user:password))``, which kazoo puts in
every ACL it sends and which can be brute-forced offline). The passwords are those of the
configured URL and ``ZKFLAGS_PASSWORD``, and of every URL a client was made for
(:func:`remember`). Each is replaced with :data:`django_zkflags.conf.MASK`.

:class:`KazooLogFilter` applies this to kazoo's log records. Checked against kazoo 2.11,
whose connection logs through the ``kazoo.client`` logger (a client's ``logger`` argument
if given): at DEBUG every request it sends -- ``Auth(auth_type=0, scheme='digest',
auth='alice:<password>')`` on every (re)connection, and the digest in each ``Create``'s
ACL -- and every response (``GetACL`` answers with the digest); at level 5 (``BLATHER``)
the session password, which with the session id lets another client take the session over.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import threading
from collections.abc import Iterable
from itertools import islice
from typing import Any
from urllib.parse import quote, unquote

from django.views.decorators.debug import sensitive_variables

from . import conf
from .kazoo_compat import mask_session_password, masked_packet

#: The loggers kazoo's connection writes to (``kazoo.client`` unless a client was given
#: its own ``logger``).
KAZOO_LOGGERS = ("kazoo.client", "kazoo.protocol.connection")

_lock = threading.Lock()
_remembered: tuple[tuple[str | None, str], ...] = ()  # (user, password); swapped whole
_INSPECT_DEPTH = 4
_INSPECT_ITEMS = 1000


@sensitive_variables()
def remember(username: str | None, password: str | None) -> None:
    """Hide this identity's password too (a client made for a URL other than the
    configured one)."""
    global _remembered
    if not password:
        return
    with _lock:
        if (username, password) not in _remembered:
            _remembered = (*_remembered, (username, password))


@sensitive_variables()
def _configured() -> tuple[str | None, str | None]:
    """The URL string and ZKFLAGS_PASSWORD of the settings, read leniently: nothing here
    raises (a malformed URL still has its password hidden)."""
    try:
        url = conf.get_url_string()
    except Exception:
        url = None
    try:
        separate = conf.get_password()
    except Exception:
        separate = None
    return (url if isinstance(url, str) else None), separate


def digest(username: str, password: str) -> str:
    """The hash part of ZooKeeper's digest id ``user:base64(sha1(user:password))``."""
    sha = hashlib.sha1(f"{username}:{password}".encode(), usedforsecurity=False).digest()
    return base64.b64encode(sha).decode()


@sensitive_variables()
def secrets() -> tuple[str, ...]:
    """Every string to hide, longest first (so no part of a longer one is left)."""
    return _secrets(*_configured(), _remembered)


@functools.lru_cache(maxsize=16)
@sensitive_variables()
def _secrets(
    url: str | None, separate: str | None, remembered: tuple[tuple[str | None, str], ...]
) -> tuple[str, ...]:
    identities = list(remembered)
    user, written = conf.url_credentials(url) if url else (None, None)
    if written:
        identities += [(user, written), (user, unquote(written))]
    if separate:
        identities.append((user, separate))
    found: set[str] = set()
    for username, password in identities:
        found.update(_forms(password))
        if username is not None:
            found.add(digest(unquote(username), password))
    found.discard("")
    return tuple(sorted(found, key=len, reverse=True))


def _forms(password: str) -> Iterable[str]:
    yield password
    yield quote(password, safe="")
    # As repr() shows it inside a longer string: in double quotes (or none needed), and in
    # single quotes with any ' escaped (the longer string holds both kinds).
    yield repr(password)[1:-1]
    yield repr('"' + password)[2:-1]


@sensitive_variables()
def redact(text: str, hidden: tuple[str, ...] | None = None) -> str:
    """``text`` with every secret replaced by the mask."""
    for secret in secrets() if hidden is None else hidden:
        if secret in text:
            text = text.replace(secret, conf.MASK)
    return text


@sensitive_variables()
def _contains(value: Any, hidden: tuple[str, ...], depth: int = 0) -> bool:
    if isinstance(value, str):
        return any(secret in value for secret in hidden)
    if isinstance(value, (bytes, bytearray)):
        return any(secret.encode() in value for secret in hidden)
    if depth >= _INSPECT_DEPTH:
        return False
    if isinstance(value, dict):
        items: Iterable[Any] = (x for pair in value.items() for x in pair)
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = value
    else:
        return False
    return any(_contains(item, hidden, depth + 1) for item in islice(items, _INSPECT_ITEMS))


@sensitive_variables()
def hide(value: Any) -> Any:
    """``value`` for display: a string with the secrets masked (and a ``zk://`` URL's
    password, known or not); a built-in container (looked into 4 levels deep, 1,000 items
    each) holding a secret becomes its ``repr``, masked; anything else as it is (the app's
    own objects keep the password out of their ``repr``)."""
    if isinstance(value, str) and value.startswith("zk://"):
        value = conf.mask_url(value)  # a URL with a password the settings do not know
    hidden = secrets()
    if not hidden or not _contains(value, hidden):
        return value
    if isinstance(value, str):
        return redact(value, hidden)
    return redact(repr(value), hidden)


class KazooLogFilter(logging.Filter):
    """Masks credentials in kazoo's log records (see the module docstring): the ``Auth``
    packet of any client (structurally: its credential becomes ``user:***``), the session
    password, and every form of the known passwords and their digests."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(masked_packet(arg, conf.MASK) for arg in record.args)
        try:
            message = record.getMessage()
        except Exception:  # a broken record is logging's to report
            return True
        masked = mask_session_password(redact(message), conf.MASK)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


_filter = KazooLogFilter()


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Put the filter on kazoo's loggers (and on ``logger``, a client's own); idempotent.

    A filter on a logger sees the records logged to that very logger, before any handler
    (and before they propagate), whatever the logging configuration."""
    for target in (*(logging.getLogger(name) for name in KAZOO_LOGGERS), logger):
        if target is not None and _filter not in target.filters:
            target.addFilter(_filter)
