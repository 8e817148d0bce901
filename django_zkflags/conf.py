"""Settings for django-zkflags: one place, defaults merged with the user's.

Three Django settings are read:

* ``ZKFLAGS_URL`` -- where ZooKeeper is,
  ``zk://[user[:password]@]host:port[,host:port...]/root``. When the setting is absent it
  is read from the environment variable of the same name (with django-environ), and falls
  back to a local single node.
* ``ZKFLAGS_PASSWORD`` -- the password of the URL's user, kept out of the URL
  (``zk://user@host/root``). When the setting is absent it is read from the file named by
  the environment variable ``ZKFLAGS_PASSWORD_FILE``, else from the environment variable
  ``ZKFLAGS_PASSWORD`` (django-environ's ``FileAwareEnv``).
* ``ZKFLAGS`` -- a dict of options merged over :data:`DEFAULTS`.

All are cached and the cache is cleared on ``setting_changed`` so ``override_settings``
works in tests. Nothing here puts the password in a message: errors show the URL through
:func:`mask_url`, and functions whose local variables hold it are marked with Django's
``sensitive_variables``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import tempfile
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import environ
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.views.decorators.debug import sensitive_variables
from environ.fileaware_mapping import FileAwareMapping

DEFAULT_URL = "zk://127.0.0.1:2181/zkflags"
#: The settings that say where ZooKeeper is and who the app is there.
URL_SETTINGS = ("ZKFLAGS_URL", "ZKFLAGS_PASSWORD")
#: What a password is replaced with wherever it would be shown.
MASK = "***"

DEFAULTS: dict[str, Any] = {
    # Start the watcher in AppConfig.ready (skipped for the commands below).
    "AUTOSTART": True,
    "SKIP_COMMANDS": (
        "check",
        "collectstatic",
        "compilemessages",
        "createcachetable",
        "makemessages",
        "makemigrations",
        "migrate",
        "showmigrations",
        "sqlmigrate",
        "squashmigrations",
    ),
    # How long AppConfig.ready waits for the first snapshot before serving the local file
    # (or the defaults). The watcher keeps connecting in the background either way.
    "STARTUP_TIMEOUT": 1.0,
    # How long a write (admin save, command) waits for a connection before giving up.
    "WRITE_TIMEOUT": 5.0,
    # The same for a save from the admin, where a person waits with the form: a refused
    # save comes back with what was typed within about this long.
    "ADMIN_WRITE_TIMEOUT": 3.0,
    # ZooKeeper session timeout, seconds.
    "SESSION_TIMEOUT": 10.0,
    # Every process checks this often (seconds, with +-20% jitter) that the snapshot it
    # serves is still the latest, with one cheap `exists`: a watch ZooKeeper dropped without
    # telling is then noticed and re-armed. 0 turns it off.
    "VERIFY_INTERVAL": 10.0,
    # After this many seconds without a session, reconnect as a client that has seen no
    # transaction: a wiped or rebuilt ensemble refuses clients that saw newer ones (kazoo
    # issue #42), forever. 0 turns it off.
    "RESET_HISTORY_AFTER": 15.0,
    # Ceiling of the reconnect back-off, seconds. kazoo's own default grows to an hour.
    "RECONNECT_MAX_DELAY": 1.0,
    # The environment this process resolves flags for (per-environment overrides, inherited
    # from parents). None: the environment variable ZKFLAGS_ENVIRONMENT, else no environment.
    # A host pegged to an environment in ZooKeeper (manage.py zkflags host) wins.
    "ENVIRONMENT": None,
    # This host's name for pegging; None: socket.gethostname().
    "HOSTNAME": None,
    # Answer for a flag that does not exist.
    "UNKNOWN_FLAG_ACTIVE": False,
    # Last-known snapshot kept on disk; "" or None disables it. "default": one file per
    # ZooKeeper location (hosts and root, never the credentials) in a directory only this
    # user can write (see snapshot_file_path).
    "SNAPSHOT_FILE": "default",
    # Cookie that gives anonymous visitors a stable identity for percentage rollouts.
    "ANONYMOUS_COOKIE": "zkflags_uid",
    "ANONYMOUS_COOKIE_AGE": 60 * 60 * 24 * 365,
    # Let a request force flags with ?zkflags=name:on,other:off. For local testing only;
    # refused by system check zkflags.E003 when DEBUG is False.
    "TESTING_OVERRIDES": False,
    "TESTING_OVERRIDES_PARAM": "zkflags",
    # Largest payload the client will send in one write; ZooKeeper's jute.maxbuffer is
    # 1 MiB and an oversize packet makes the server drop the connection.
    "MAX_WRITE_BYTES": 1000 * 1000,
    # Flags declared in code: {"new-checkout": False, "search-v2": {"default": True,
    # "note": "...", "value": ...}}. A declared flag ZooKeeper does not hold answers its
    # declared default (not UNKNOWN_FLAG_ACTIVE); the admin offers to create it.
    "FLAGS": {},
    # Largest snapshot, as JSON, that a process decodes (from ZooKeeper or its disk copy)
    # and a writer writes. A larger one is refused as corrupt before it is inflated: zlib
    # inflates up to ~1,000 times, so a 1 MB hand-written znode could be 1 GB in every
    # process at once. 100,000 small flags are about 8 to 18 MB. At least MAX_WRITE_BYTES.
    "MAX_SNAPSHOT_BYTES": 64 * 1024 * 1024,
    # Register this process in the fleet (an ephemeral znode under <root>/fleet saying which
    # snapshot it serves; the admin's Fleet page and `manage.py zkflags fleet` list them).
    "FLEET": True,
    # health/ answers 503 when this process serves no snapshot at all (never loaded one from
    # ZooKeeper nor from its disk copy). With a number of seconds, also when the snapshot it
    # serves was not confirmed current within that many seconds. None: never for staleness
    # (a process that lost ZooKeeper keeps serving its last snapshot).
    "HEALTH_MAX_STALENESS": None,
    # Run a steward in this process too (see docs/steward.md): it contends with the other
    # stewards of the root, and when elected runs the scheduled changes and heals hand
    # edits of the flag znodes. `manage.py zkflags steward` runs one as a process of its own.
    "STEWARD": False,
}


class ImproperlyConfiguredURL(ValueError):
    """ZKFLAGS_URL cannot be parsed."""


@dataclass(frozen=True)
class ZooKeeperURL:
    """A parsed ``ZKFLAGS_URL``."""

    hosts: str
    root: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def has_credentials(self) -> bool:
        return self.username is not None


def _split_userinfo(url: str) -> tuple[str, str | None, str]:
    """``(before, userinfo, after)``: ``url == before + userinfo + "@" + after`` when there is
    a userinfo, else ``(before, None, rest)``. Lenient, for malformed URLs too: when an "@"
    comes after the first "/" (a raw "/" in a password, or an "@" in the path), everything up
    to the last "@" counts as userinfo, so a password is never taken for a host or a path."""
    scheme, sep, rest = url.partition("://")
    before = scheme + sep if sep else ""
    if not sep:
        rest = url
    netloc, _, path = rest.partition("/")
    if "@" in netloc:
        userinfo = netloc.rpartition("@")[0]
        return before, userinfo, rest[len(userinfo) + 1 :]
    if "@" in path:
        userinfo, _, after = rest.rpartition("@")
        return before, userinfo, after
    return before, None, rest


@sensitive_variables()
def url_credentials(url: str) -> tuple[str | None, str | None]:
    """The user and the password written in ``url``, as written there (percent-encoded or
    not); None for what is absent. Works on malformed URLs too, like :func:`mask_url`."""
    _, userinfo, _ = _split_userinfo(url)
    if userinfo is None:
        return None, None
    user, colon, password = userinfo.partition(":")
    return user or None, password if colon and password else None


@sensitive_variables()
def mask_url(url: str) -> str:
    """``url`` with its password replaced: ``zk://alice:***@host:2181/root``.

    Safe on any string, malformed URLs included (see :func:`_split_userinfo`); a URL
    without a password comes back unchanged."""
    before, userinfo, after = _split_userinfo(url)
    if userinfo is None:
        return url
    user, colon, password = userinfo.partition(":")
    if not colon:
        return url
    return f"{before}{user}:{MASK}@{after}"


@sensitive_variables()
def parse_url(url: str, password: str | None = None) -> ZooKeeperURL:
    """Parse ``zk://[user:password@]host1:2181,host2:2181/root/path``.

    ``password`` is the password given apart from the URL (``ZKFLAGS_PASSWORD``); the URL
    then names the user only, ``zk://user@host/root``. Error messages show the URL masked.
    """
    shown = mask_url(url) if isinstance(url, str) else url
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != "zk":
        raise ImproperlyConfiguredURL(f"ZKFLAGS_URL must start with zk:// (got {shown!r})")
    netloc, slash, path = rest.partition("/")
    # An "@" only after the first "/" is a root path with "@" in it, or a password with a
    # raw "/": what is parsed below as a host or a root could be part of the password, so
    # errors then show the masked URL instead of the piece.
    hide_pieces = "@" in path and "@" not in netloc
    username = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, pw = userinfo.partition(":")
        if not user or (not colon and password is None):
            raise ImproperlyConfiguredURL(
                "ZKFLAGS_URL credentials must be user:password (a ZooKeeper digest identity), "
                "or user@ with the password in ZKFLAGS_PASSWORD"
            )
        if colon and password is not None:
            raise ImproperlyConfiguredURL(
                "ZKFLAGS_URL has a password and ZKFLAGS_PASSWORD is set too: keep one "
                "(ZKFLAGS_PASSWORD keeps it out of the URL)"
            )
        username = unquote(user)
        if colon:
            password = unquote(pw)
    elif password is not None:
        raise ImproperlyConfiguredURL(
            "ZKFLAGS_PASSWORD is set but ZKFLAGS_URL names no user: write zk://user@host/root"
        )
    if not netloc:
        raise ImproperlyConfiguredURL(f"ZKFLAGS_URL has no host (got {shown!r})")
    hosts = []
    for hostport in netloc.split(","):
        host, colon, port = hostport.rpartition(":")
        if not colon:
            host, port = hostport, "2181"
        if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            bad = f"in {shown!r}" if hide_pieces else repr(hostport)
            raise ImproperlyConfiguredURL(f"ZKFLAGS_URL has a bad host:port {bad}")
        hosts.append(f"{host}:{port}")
    root = "/" + path.strip("/") if slash else "/zkflags"
    if root == "/":
        raise ImproperlyConfiguredURL("ZKFLAGS_URL needs a root path such as /zkflags")
    if any(not part or part in (".", "..") for part in root[1:].split("/")):
        bad = f"in {shown!r}" if hide_pieces else repr(root)
        raise ImproperlyConfiguredURL(f"ZKFLAGS_URL has a bad root path {bad}")
    return ZooKeeperURL(",".join(hosts), root, username, password)


@functools.cache
@sensitive_variables()
def get_url_string() -> str:
    value = getattr(settings, "ZKFLAGS_URL", None)
    if value is None:
        value = environ.Env().str("ZKFLAGS_URL", default=DEFAULT_URL)
    return value


@functools.cache
@sensitive_variables()
def get_password() -> str | None:
    """``ZKFLAGS_PASSWORD``: the setting; else the file named by the environment variable
    ``ZKFLAGS_PASSWORD_FILE`` (without its final newline; a Docker or systemd secret); else
    the environment variable ``ZKFLAGS_PASSWORD``. None when not given (an empty value
    counts as not given)."""
    value = getattr(settings, "ZKFLAGS_PASSWORD", None)
    if value is None:
        env = environ.FileAwareEnv()
        env.ENVIRON = FileAwareMapping(cache=False)  # read again when this cache is cleared
        try:
            value = env.str("ZKFLAGS_PASSWORD", default="")
        except OSError as exc:
            raise ImproperlyConfiguredURL(
                f"ZKFLAGS_PASSWORD_FILE cannot be read: {exc.strerror or exc}"
            ) from None
        value = value.rstrip("\r\n")
    if not isinstance(value, str):
        raise ImproperlyConfiguredURL("ZKFLAGS_PASSWORD must be a string")
    return value or None


@functools.cache
def get_url() -> ZooKeeperURL:
    return parse_url(get_url_string(), password=get_password())


@functools.cache
def get_config() -> dict[str, Any]:
    config = dict(DEFAULTS)
    config.update(getattr(settings, "ZKFLAGS", {}) or {})
    return config


def get(key: str) -> Any:
    return get_config()[key]


def environment() -> str | None:
    """The configured environment: ZKFLAGS["ENVIRONMENT"], else $ZKFLAGS_ENVIRONMENT."""
    configured = get("ENVIRONMENT")
    if configured is None:
        configured = environ.Env().str("ZKFLAGS_ENVIRONMENT", default="") or None
    return configured


def hostname() -> str:
    return get("HOSTNAME") or socket.gethostname()


def snapshot_file_path(url: ZooKeeperURL | None = None) -> str | None:
    """Where the last-known snapshot of ``url`` (default: the configured one) is kept on
    disk, or None when disabled.

    The default file is named after the hosts and the root path only -- never the
    credentials -- and lives in :func:`snapshot_directory`, which only this user can write.
    """
    value = get("SNAPSHOT_FILE")
    if not value:
        return None
    if value == "default":
        url = url or get_url()
        location = ",".join(sorted(url.hosts.split(","))) + url.root
        digest = hashlib.sha256(location.encode()).hexdigest()[:16]
        return os.path.join(snapshot_directory(), f"zkflags-{digest}.snapshot")
    return str(value)


def snapshot_directory() -> str:
    """The directory of the default snapshot file: ``$XDG_CACHE_HOME/django-zkflags`` (else
    ``~/.cache/django-zkflags``) when that can be created; otherwise, as for a service user
    whose home does not exist or cannot be written, ``<tempdir>/django-zkflags-<uid>``.

    Only decided here (nothing is created): :mod:`django_zkflags.diskcopy` creates it with
    mode 0700 and refuses it unless this user owns it and nobody else can write it.
    """
    cache = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(cache):
        home = os.path.expanduser("~")
        cache = os.path.join(home, ".cache") if os.path.isabs(home) else ""
    if cache and _can_create(os.path.join(cache, "django-zkflags")):
        return os.path.join(cache, "django-zkflags")
    return os.path.join(tempfile.gettempdir(), f"django-zkflags-{os.geteuid()}")


def _can_create(directory: str) -> bool:
    """Is ``directory`` a writable directory, or can it be made in its parent (the cache
    directory), or that parent in its own (a home directory, never created)?"""
    cache = os.path.dirname(directory)
    home = os.path.dirname(cache)
    if os.path.lexists(directory):
        return os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK)
    if os.path.lexists(cache):
        return os.path.isdir(cache) and os.access(cache, os.W_OK | os.X_OK)
    return os.path.isdir(home) and os.access(home, os.W_OK | os.X_OK)


def clear_caches() -> None:
    get_url_string.cache_clear()
    get_password.cache_clear()
    get_url.cache_clear()
    get_config.cache_clear()


@receiver(setting_changed, dispatch_uid="zkflags-conf")
def _clear_caches(*, setting: str, **kwargs: Any) -> None:
    if setting == "ZKFLAGS" or setting in URL_SETTINGS:
        clear_caches()


def declared_flags() -> dict[str, Any]:
    """``ZKFLAGS["FLAGS"]`` as rules (``FlagRule``, no version), the invalid entries left
    out (system checks zkflags.W006 and W007 report them)."""
    from .rules import FlagRule, InvalidFlag

    declared = get("FLAGS") or {}
    rules: dict[str, Any] = {}
    if not isinstance(declared, dict):
        return rules
    for name, spec in declared.items():
        if isinstance(spec, bool):
            spec = {"default": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("default", False), bool):
            continue
        try:
            rules[name] = FlagRule(
                name,
                everyone=bool(spec.get("default", False)),
                note=str(spec.get("note") or "declared in settings"),
                value=spec.get("value"),
            )
        except InvalidFlag:
            continue
    return rules
