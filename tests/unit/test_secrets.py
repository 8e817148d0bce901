"""Secrets stay secret (issue 8, item 8), without ZooKeeper.

* The password of ``ZKFLAGS_URL`` is masked where Django shows it: the technical 500 page
  (HTML and text), the error e-mails to ADMINS, system check messages; check zkflags.W004
  says when the configured exception reporter filter would show it.
* It can be given apart from the URL (``ZKFLAGS_PASSWORD``: setting, environment, file).
* zkflags.W005 (``check --deploy``): no credentials, so the znodes are world-writable.
* The default disk copy of the snapshot is named without the credentials, in a directory
  only this user can write; files and directories planted by another user are refused.

kazoo's DEBUG log of a real authenticated connection: tests/integration/test_secrets.py.
"""

from __future__ import annotations

import hashlib
import html as htmllib
import logging
import os
import pwd
import re
import stat
import sys
import tempfile
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import pytest
from django.core import checks as django_checks
from django.test import RequestFactory
from django.utils.log import AdminEmailHandler
from django.views.debug import (
    ExceptionReporter,
    SafeExceptionReporterFilter,
    get_default_exception_reporter_filter,
)
from kazoo.exceptions import ConfigurationError
from kazoo.handlers.threading import SequentialThreadingHandler

from django_zkflags import conf, flag_is_active_for_user, runtime
from django_zkflags.cache import store
from django_zkflags.checks import check_open_acl, check_password_shown, check_settings
from django_zkflags.client import make_client
from django_zkflags.conf import ImproperlyConfiguredURL, mask_url, parse_url
from django_zkflags.diskcopy import SnapshotFile
from django_zkflags.redaction import digest, hide
from django_zkflags.snapshot import EMPTY, encode_entries

PASSWORD = "s3cr3tPW-q9x"
# Characters that URLs percent-encode and repr() escapes: it must be hidden in every form.
ODD_PASSWORD = "p@ss/w:rd'\"x"
ODD_ENCODED = "p%40ss%2Fw%3Ard%27%22x"
HOSTS = "zk1.example.com:2181,zk2.example.com:2181"
URL = f"zk://alice:{PASSWORD}@{HOSTS}/flags"
BAD_URL = f"zk://alice:{PASSWORD}@zk1.example.com:99999/flags"  # a port out of range
OUR_FILTER = "django_zkflags.debug.SafeExceptionReporterFilter"
DJANGO_FILTER = "django.views.debug.SafeExceptionReporterFilter"
ExcInfo = tuple[type[BaseException], BaseException, TracebackType]


def secret_forms(password: str = PASSWORD) -> list[str]:
    """The password, what an attacker could use instead (its digest), and for the odd one
    a part that survives quoting and escaping."""
    forms = [password, digest("alice", password)]
    return [*forms, "p@ss/w", ODD_ENCODED[:10]] if password == ODD_PASSWORD else forms


def assert_hidden(text: str, password: str = PASSWORD) -> None:
    for shown in (text, htmllib.unescape(text)):
        for form in secret_forms(password):
            assert form not in shown


@pytest.fixture(autouse=True)
def clean(settings: Any) -> Iterator[None]:
    """No cached exception reporter filter (Django keeps one per process); an empty store."""
    get_default_exception_reporter_filter.cache_clear()
    store.publish(EMPTY)
    yield
    get_default_exception_reporter_filter.cache_clear()
    store.publish(EMPTY)


# -- mask_url and parse_url's messages -----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (URL, f"zk://alice:***@{HOSTS}/flags"),
        (f"zk://alice:{ODD_ENCODED}@h/r", "zk://alice:***@h/r"),
        ("zk://alice:p@ss@h/r", "zk://alice:***@h/r"),  # a raw "@" in the password
        ("zk://alice:pa/ss@h/r", "zk://alice:***@h/r"),  # a raw "/" in the password
        (f"http://alice:{PASSWORD}@h/r", "http://alice:***@h/r"),
        (f"alice:{PASSWORD}@h/r", "alice:***@h/r"),
        ("zk://alice@h/r", "zk://alice@h/r"),  # no password: unchanged
        ("zk://h:2181/r", "zk://h:2181/r"),
        ("", ""),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    "url",
    [
        BAD_URL,
        f"http://alice:{PASSWORD}@h/r",
        f"zk://alice:{PASSWORD}@/r",
        f"zk://alice:{PASSWORD}@h:2181/a/../b",
        "zk://alice:s3cr3t/PW-q9x@h:2181/r",  # the raw "/" puts part of it where a host is
        "zk://alice:2181/s3cr3tPW@h/r/..",  # ... and where the root path is
    ],
)
def test_parse_url_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(ImproperlyConfiguredURL) as raised:
        parse_url(url)
    message = str(raised.value)
    for piece in (PASSWORD, "s3cr3t", "PW-q9x", "s3cr3tPW"):
        assert piece not in message


def test_e001_shows_the_url_masked(settings: Any) -> None:
    settings.ZKFLAGS_URL = f"http://alice:{PASSWORD}@zk1:2181/flags"
    [error] = [m for m in django_checks.run_checks() if m.id == "zkflags.E001"]
    assert "alice:***@zk1:2181" in error.msg  # the URL is shown, masked
    assert_hidden(f"{error.msg} {error.hint}")


# -- the password apart from the URL ---------------------------------------------------------


def test_password_from_the_setting(settings: Any) -> None:
    settings.ZKFLAGS_URL = f"zk://alice@{HOSTS}/flags"
    settings.ZKFLAGS_PASSWORD = PASSWORD
    url = conf.get_url()
    assert (url.username, url.password, url.hosts) == ("alice", PASSWORD, HOSTS)
    assert check_settings() == []
    # Django's own filter hides a setting whose name holds PASS.
    assert SafeExceptionReporterFilter().get_safe_settings()["ZKFLAGS_PASSWORD"] != PASSWORD


def test_password_from_the_environment_or_a_file(settings: Any, monkeypatch, tmp_path) -> None:
    settings.ZKFLAGS_URL = f"zk://alice@{HOSTS}/flags"
    monkeypatch.setenv("ZKFLAGS_PASSWORD", PASSWORD)
    conf.clear_caches()
    assert conf.get_url().password == PASSWORD

    secret = tmp_path / "zk-password"
    secret.write_text(ODD_PASSWORD + "\n")  # as `echo` writes it
    monkeypatch.setenv("ZKFLAGS_PASSWORD_FILE", str(secret))
    conf.clear_caches()
    assert conf.get_url().password == ODD_PASSWORD  # the file wins, without its newline

    secret.unlink()
    conf.clear_caches()
    [error] = check_settings()
    assert error.id == "zkflags.E001" and "ZKFLAGS_PASSWORD_FILE cannot be read" in error.msg
    monkeypatch.delenv("ZKFLAGS_PASSWORD_FILE")
    monkeypatch.delenv("ZKFLAGS_PASSWORD")
    conf.clear_caches()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"zk://alice:{PASSWORD}@h/r", "keep one"),
        ("zk://h/r", "names no user"),
        ("zk://:x@h/r", "user:password"),
    ],
)
def test_password_given_twice_or_without_a_user(settings: Any, url: str, message: str) -> None:
    settings.ZKFLAGS_URL = url
    settings.ZKFLAGS_PASSWORD = "other-password"
    with pytest.raises(ImproperlyConfiguredURL, match=message) as raised:
        conf.get_url()
    assert PASSWORD not in str(raised.value) and "other-password" not in str(raised.value)
    assert [m.id for m in check_settings()] == ["zkflags.E001"]


def test_a_user_without_password_still_needs_one() -> None:
    with pytest.raises(ImproperlyConfiguredURL, match="user:password"):
        parse_url("zk://alice@h/r")
    assert parse_url("zk://alice@h/r", password=PASSWORD).password == PASSWORD


# -- the technical 500 page and the e-mails to ADMINS ---------------------------------------


def fail_parsing() -> ExcInfo:
    """A process (or a request) creating its runtime with a malformed ZKFLAGS_URL: the
    exception is raised in parse_url, whose variables hold the URL and the password."""
    try:
        runtime.FlagRuntime()
    except ImproperlyConfiguredURL:
        return sys.exc_info()  # type: ignore[return-value]
    raise AssertionError("the URL was accepted")


def fail_in_kazoo() -> ExcInfo:
    """kazoo refusing a handler class, raised in KazooClient.__init__ whose ``auth_data``
    holds ``alice:<password>``."""
    try:
        make_client(
            conf.get_url(),
            session_timeout=1.0,
            reconnect_max_delay=1.0,
            handler=SequentialThreadingHandler,
        )
    except ConfigurationError:
        return sys.exc_info()  # type: ignore[return-value]
    raise AssertionError("kazoo took a class as handler")


def fail_in_user_code() -> ExcInfo:
    """A view of the site's own that copied the URL into a variable (nothing can mark its
    variables sensitive but its author)."""
    from django.conf import settings

    try:
        zookeeper = settings.ZKFLAGS_URL  # noqa: F841 (a local variable is the point)
        raise RuntimeError("boom")
    except RuntimeError:
        return sys.exc_info()  # type: ignore[return-value]


def report(exc_info: ExcInfo, request: Any = None) -> tuple[str, str]:
    """The technical 500 page as Django renders it: HTML (browser with DEBUG, the HTML part
    of the e-mails) and text (the e-mail body)."""
    request = request or RequestFactory().get("/flags/", HTTP_ACCEPT="text/html")
    reporter = ExceptionReporter(request, *exc_info)
    return reporter.get_traceback_html(), reporter.get_traceback_text()


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("failure", [fail_parsing, fail_in_kazoo, fail_in_user_code])
def test_our_filter_hides_the_password_on_the_500_page(settings: Any, debug, failure) -> None:
    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = OUR_FILTER
    settings.DEBUG = debug
    settings.ZKFLAGS_URL = BAD_URL if failure is fail_parsing else URL
    html, text = report(failure())
    assert_hidden(html)
    assert_hidden(text)
    # Shown masked, not left out: the settings, and the frames that held it.
    assert "alice:***@zk1.example.com" in html and "alice:***@zk1.example.com" in text
    frame = {fail_parsing: "parse_url", fail_in_kazoo: "kazoo/client.py"}
    assert frame.get(failure, "fail_in_user_code") in html


def test_django_filter_shows_the_password_in_the_settings_and_w004_says_so(settings) -> None:
    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = DJANGO_FILTER
    settings.ZKFLAGS_URL = URL
    html, text = report(fail_in_kazoo())
    assert PASSWORD in html and PASSWORD in text  # the settings table, in full
    [warning] = [m for m in django_checks.run_checks() if m.id == "zkflags.W004"]
    assert warning.level == django_checks.WARNING
    assert DJANGO_FILTER in warning.msg and OUR_FILTER in warning.hint
    assert_hidden(f"{warning.msg} {warning.hint}")

    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = OUR_FILTER
    assert check_password_shown() == []


@pytest.mark.parametrize("failure", [fail_parsing, fail_in_kazoo])
def test_password_apart_from_the_url_with_djangos_own_filter(settings, failure) -> None:
    """With ZKFLAGS_PASSWORD and Django's filter (DEBUG False: the e-mails), the password is
    hidden by the setting's name and by the app's ``sensitive_variables``."""
    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = DJANGO_FILTER
    settings.ZKFLAGS_URL = (
        "zk://alice@zk1.example.com:99999/flags"
        if failure is fail_parsing
        else f"zk://alice@{HOSTS}/flags"
    )
    settings.ZKFLAGS_PASSWORD = PASSWORD
    assert check_password_shown() == []
    html, text = report(failure())
    assert_hidden(html)
    assert_hidden(text)
    assert "ZKFLAGS_PASSWORD" in html and "zk://alice@zk1.example.com" in html


def test_error_email_to_admins(settings: Any, mailoutbox) -> None:
    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = OUR_FILTER
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.ZKFLAGS_URL = f"zk://alice:{ODD_ENCODED}@{HOSTS}/flags"
    request = RequestFactory().get("/flags/")
    record = logging.LogRecord(
        "django.request",
        logging.ERROR,
        __file__,
        1,
        "Internal Server Error: %s",
        ("/flags/",),
        fail_in_kazoo(),
    )
    record.request = request  # what django.utils.log.log_response attaches
    AdminEmailHandler(include_html=True).emit(record)
    [mail] = mailoutbox
    for text in (mail.subject, mail.body, mail.alternatives[0][0]):
        assert_hidden(text, ODD_PASSWORD)
    assert "alice:***@zk1.example.com" in mail.body
    assert "kazoo/client.py" in mail.body  # the frame that held it


def test_url_from_the_environment_in_request_meta(settings: Any, monkeypatch) -> None:
    """runserver copies the process environment into every request.META."""
    del settings.ZKFLAGS_URL
    monkeypatch.setenv("ZKFLAGS_URL", URL)
    conf.clear_caches()
    request = RequestFactory().get("/flags/", ZKFLAGS_URL=URL)
    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = DJANGO_FILTER
    assert PASSWORD in report(fail_in_kazoo(), request)[1]
    assert [m.id for m in check_password_shown()] == ["zkflags.W004"]
    assert "request.META" in check_password_shown()[0].msg

    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = OUR_FILTER
    get_default_exception_reporter_filter.cache_clear()
    html, text = report(fail_in_kazoo(), request)
    assert_hidden(html)
    assert_hidden(text)
    assert check_password_shown() == []
    monkeypatch.delenv("ZKFLAGS_URL")
    settings.ZKFLAGS_URL = "zk://127.0.0.1:1/after"  # nothing cached from the environment


class HidesZkflagsByName(SafeExceptionReporterFilter):
    hidden_settings = re.compile("API|TOKEN|KEY|SECRET|PASS|SIGNATURE|ZKFLAGS", re.I)


class ShowsEverything(SafeExceptionReporterFilter):
    hidden_settings = re.compile("^$")


def test_w004_asks_the_configured_filter(settings: Any) -> None:
    settings.ZKFLAGS_URL = URL
    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = f"{__name__}.HidesZkflagsByName"
    assert check_password_shown() == []
    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = f"{__name__}.ShowsEverything"
    assert [m.id for m in check_password_shown()] == ["zkflags.W004"]
    settings.ZKFLAGS_URL = f"zk://{HOSTS}/flags"  # nothing to show
    assert check_password_shown() == []


def test_hide_looks_into_containers() -> None:
    from django.test import override_settings

    with override_settings(ZKFLAGS_URL=URL):
        assert hide([("digest", f"alice:{PASSWORD}")]) == "[('digest', 'alice:***')]"
        assert hide({"id": f"alice:{digest('alice', PASSWORD)}"}) == "{'id': 'alice:***'}"
        assert hide("zk://bob:hunter2@h/r") == "zk://bob:***@h/r"  # a URL it does not know
        assert hide(42) == 42 and hide(["plain"]) == ["plain"]


# -- zkflags.W005: world-writable znodes -------------------------------------------------------


def test_w005_no_credentials_without_debug_is_a_deploy_warning(settings: Any) -> None:
    settings.ZKFLAGS_URL = f"zk://{HOSTS}/flags"
    settings.DEBUG = False
    deploy = [m for m in django_checks.run_checks(include_deployment_checks=True)]
    [warning] = [m for m in deploy if m.id == "zkflags.W005"]
    assert "world-writable" in warning.msg and "ZKFLAGS_PASSWORD" in warning.hint
    # Not in the checks every command (and Django's test runner, with DEBUG False) runs.
    assert "zkflags.W005" not in [m.id for m in django_checks.run_checks()]

    settings.DEBUG = True
    assert check_open_acl() == []
    settings.DEBUG = False
    settings.ZKFLAGS_URL = f"zk://alice@{HOSTS}/flags"
    settings.ZKFLAGS_PASSWORD = PASSWORD
    assert check_open_acl() == []
    settings.ZKFLAGS_URL = "zk://h:99999/r"  # malformed: E001's business
    del settings.ZKFLAGS_PASSWORD
    assert check_open_acl() == []


# -- the disk copy ---------------------------------------------------------------------------

NOBODY = pwd.getpwnam("nobody").pw_uid
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="planting a file as another user needs root (chown)"
)


@pytest.fixture
def home(monkeypatch, tmp_path) -> str:
    """A home directory of our own, and a temp dir of our own shared like /tmp (1777)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    os.mkdir(tmp_path / "home", 0o755)
    shared = tmp_path / "tmp"
    os.mkdir(shared)
    os.chmod(shared, 0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    return str(tmp_path / "home")


def default_path(settings: Any, url: str, password: str | None = None) -> str:
    settings.ZKFLAGS = {**settings.ZKFLAGS, "SNAPSHOT_FILE": "default"}
    settings.ZKFLAGS_URL = url
    settings.ZKFLAGS_PASSWORD = password
    path = conf.snapshot_file_path()
    assert path is not None
    return path


def test_default_path_is_named_without_credentials(settings: Any, home: str) -> None:
    path = default_path(settings, URL)
    assert os.path.dirname(path) == os.path.join(home, ".cache", "django-zkflags")
    # The same file whatever the credentials (or none), the order of the hosts: the name
    # cannot carry anything of the password.
    for url, password in [
        (f"zk://alice:other@{HOSTS}/flags", None),
        (f"zk://bob@{HOSTS}/flags", PASSWORD),
        (f"zk://{HOSTS}/flags", None),
        ("zk://zk2.example.com,zk1.example.com/flags", None),
    ]:
        assert default_path(settings, url, password) == path
    assert hashlib.sha256(URL.encode()).hexdigest()[:16] not in path  # the old name
    assert default_path(settings, f"zk://{HOSTS}/other") != path


def test_default_directory_is_private_and_ours(settings: Any, home: str) -> None:
    path = default_path(settings, URL)
    SnapshotFile(path, own_directory=True).save(encode_entries({}), 1)
    directory = os.stat(os.path.dirname(path))
    assert directory.st_uid == os.geteuid()
    assert stat.S_IMODE(directory.st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_xdg_cache_home_and_the_temp_dir_fallback(settings, home, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert os.path.dirname(default_path(settings, URL)) == str(tmp_path / "xdg/django-zkflags")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", "/nonexistent")  # a service user's home
    fallback = os.path.join(tempfile.gettempdir(), f"django-zkflags-{os.geteuid()}")
    path = default_path(settings, URL)
    assert os.path.dirname(path) == fallback
    SnapshotFile(path, own_directory=True).save(encode_entries({}), 1)
    assert stat.S_IMODE(os.stat(fallback).st_mode) == 0o700


def planted_snapshot(flag: str) -> bytes:
    entries = {flag: {"name": flag, "everyone": True, "version": 0}}
    return b"zkflags-snapshot-file 1 7\n" + encode_entries(entries)


DOWN_URL = "zk://127.0.0.1:1/down"  # nothing listens there


def start_while_zookeeper_is_down(settings: Any, snapshot_file: str) -> None:
    settings.ZKFLAGS = {**settings.ZKFLAGS, "SNAPSHOT_FILE": snapshot_file}
    settings.ZKFLAGS_URL = DOWN_URL
    runtime.start(wait=0)


@pytest.fixture
def stop_runtime() -> Iterator[None]:
    yield
    runtime.stop()


@needs_root
@pytest.mark.parametrize("kind", ["file", "symlink", "hardlink"])
def test_a_file_planted_by_another_user_is_refused(
    settings, home, tmp_path, caplog, stop_runtime, kind
) -> None:
    """Another user puts a snapshot at a path in a shared sticky directory (like /tmp)
    before the app starts while ZooKeeper is down: a file of theirs; a symbolic link of
    theirs to a snapshot of ours (another site's, say); a hard link to it (possible where
    fs.protected_hardlinks is off)."""
    ours = tmp_path / "home" / "other-site.snapshot"
    ours.write_bytes(planted_snapshot("planted"))
    os.chmod(ours, 0o600)
    path = os.path.join(tempfile.gettempdir(), "flags.snapshot")
    if kind == "file":
        with open(path, "wb") as fh:
            fh.write(planted_snapshot("planted"))
        os.chown(path, NOBODY, NOBODY)
        os.chmod(path, 0o644)
        reason = f"it is owned by uid {NOBODY}, not by this process (0)"
    elif kind == "symlink":
        os.symlink(ours, path)
        os.lchown(path, NOBODY, NOBODY)
        reason = f"it is a symbolic link (owned by uid {NOBODY})"
    else:
        os.link(ours, path)
        reason = "it has 2 hard links"
    with caplog.at_level(logging.WARNING, "django_zkflags"):
        start_while_zookeeper_is_down(settings, path)
    assert store.base.source == "empty"
    assert flag_is_active_for_user(None, "planted") is False
    assert f"Ignoring the snapshot file {path}: {reason}" in caplog.text

    # The same file, ours and alone, is served: the refusal above is the ownership's.
    runtime.stop()
    os.unlink(path)
    os.rename(ours, path)
    start_while_zookeeper_is_down(settings, path)
    assert store.base.source == "file"
    assert flag_is_active_for_user(None, "planted") is True


@needs_root
def test_a_default_directory_planted_by_another_user_is_refused(
    settings, home, monkeypatch, caplog, stop_runtime
) -> None:
    """Where HOME cannot be used, the default directory is in the shared temp dir; another
    user made it first (sticky, like /tmp, so even files they cannot replace) and put a
    snapshot in it. Nothing is read from it, nothing written to it."""
    monkeypatch.setenv("HOME", "/nonexistent")
    path = default_path(settings, DOWN_URL)
    directory = os.path.dirname(path)
    os.mkdir(directory)
    os.chmod(directory, 0o1777)
    os.chown(directory, NOBODY, NOBODY)
    with open(path, "wb") as fh:
        fh.write(planted_snapshot("planted"))
    os.chmod(path, 0o600)  # even one that looks like ours
    with caplog.at_level(logging.WARNING, "django_zkflags"):
        start_while_zookeeper_is_down(settings, "default")
        assert flag_is_active_for_user(None, "planted") is False
        assert f"its directory {directory} is owned by uid {NOBODY}" in caplog.text
        caplog.clear()
        runtime.get_runtime().snapshot_file.save(encode_entries({}), 8)  # type: ignore[union-attr]
    assert f"Could not write the snapshot file {path}: its directory" in caplog.text
    assert os.listdir(directory) == [os.path.basename(path)]
