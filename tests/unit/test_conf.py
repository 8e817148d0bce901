"""conf (django_zkflags/conf.py): ZKFLAGS_URL parsing, the environment fallback, caching."""

from __future__ import annotations

import pytest
from django.core.signals import setting_changed
from django.test import override_settings

from django_zkflags import conf
from django_zkflags.conf import DEFAULT_URL, ImproperlyConfiguredURL, ZooKeeperURL, parse_url

# -- parse_url -------------------------------------------------------------------------------


def test_parse_simple_url():
    url = parse_url("zk://h:2181/root")
    assert url == ZooKeeperURL("h:2181", "/root")
    assert url.username is None and url.password is None and not url.has_credentials


def test_parse_several_hosts():
    url = parse_url("zk://zk1.example.com:2181,zk2.example.com:2182,10.0.0.3:2183/flags")
    assert url.hosts == "zk1.example.com:2181,zk2.example.com:2182,10.0.0.3:2183"
    assert url.root == "/flags"


def test_parse_default_port_for_each_host():
    assert parse_url("zk://h/r").hosts == "h:2181"
    assert parse_url("zk://a,b:3000,c/r").hosts == "a:2181,b:3000,c:2181"


def test_parse_default_root():
    assert parse_url("zk://h:2181").root == "/zkflags"
    assert parse_url(DEFAULT_URL) == ZooKeeperURL("127.0.0.1:2181", "/zkflags")


def test_parse_nested_root():
    assert parse_url("zk://h:2181/sites/shop/prod").root == "/sites/shop/prod"
    assert parse_url("zk://h:2181/sites/shop/").root == "/sites/shop"


def test_parse_credentials():
    url = parse_url("zk://editor:s3cret@h:2181/r")
    assert (url.username, url.password, url.has_credentials) == ("editor", "s3cret", True)
    assert url.hosts == "h:2181" and url.root == "/r"


def test_parse_percent_encoded_credentials():
    url = parse_url("zk://us%40er%3A1:p%40ss%3Aw%2Fo%25rd@h1:2181,h2:2181/r")
    assert url.username == "us@er:1"
    assert url.password == "p@ss:w/o%rd"
    assert url.hosts == "h1:2181,h2:2181"


def test_password_is_not_in_the_repr():
    assert "s3cret" not in repr(parse_url("zk://editor:s3cret@h:2181/r"))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h:2181/r", "must start with zk://"),
        ("zookeeper://h:2181/r", "must start with zk://"),
        ("ZK://h:2181/r", "must start with zk://"),
        ("h:2181/r", "must start with zk://"),
        ("", "must start with zk://"),
        ("zk:///r", "no host"),
        ("zk://", "no host"),
        ("zk://u:p@/r", "no host"),
        ("zk://h:abc/r", "bad host:port"),
        ("zk://h:0/r", "bad host:port"),
        ("zk://h:65536/r", "bad host:port"),
        ("zk://h:-1/r", "bad host:port"),
        ("zk://h:/r", "bad host:port"),
        ("zk://:2181/r", "bad host:port"),
        ("zk://h:2181,,h2:2181/r", "bad host:port"),
        ("zk://h:\u00b2/r", "bad host:port"),  # superscript two: isdigit() but not a port
        ("zk://h:\uff12\uff11\uff18\uff11/r", "bad host:port"),  # full-width digits
        ("zk://h:2181/", "needs a root path"),
        ("zk://h:2181//", "needs a root path"),
        ("zk://h:2181/a/../b", "bad root path"),
        ("zk://h:2181/..", "bad root path"),
        ("zk://h:2181/a/./b", "bad root path"),
        ("zk://h:2181/a//b", "bad root path"),
        ("zk://editor@h:2181/r", "user:password"),
        ("zk://:pw@h:2181/r", "user:password"),
    ],
)
def test_parse_refuses(url, message):
    with pytest.raises(ImproperlyConfiguredURL, match=message):
        parse_url(url)


# -- where the URL comes from ----------------------------------------------------------------


def _settings_changed(setting: str) -> None:
    """What override_settings sends; pytest-django's ``del settings.X`` sends nothing."""
    setting_changed.send(sender=None, setting=setting, value=None, enter=True)


def test_url_from_the_setting(settings):
    settings.ZKFLAGS_URL = "zk://from-setting:2181/s"
    assert conf.get_url_string() == "zk://from-setting:2181/s"
    assert conf.get_url() == ZooKeeperURL("from-setting:2181", "/s")


def test_url_falls_back_to_the_environment_then_the_default(settings, monkeypatch):
    monkeypatch.setenv("ZKFLAGS_URL", "zk://from-env:2182/e")
    # The setting wins over the environment while it exists.
    settings.ZKFLAGS_URL = "zk://from-setting:2181/s"
    assert conf.get_url().hosts == "from-setting:2181"

    del settings.ZKFLAGS_URL
    _settings_changed("ZKFLAGS_URL")
    assert conf.get_url_string() == "zk://from-env:2182/e"
    assert conf.get_url() == ZooKeeperURL("from-env:2182", "/e")

    monkeypatch.delenv("ZKFLAGS_URL")
    _settings_changed("ZKFLAGS_URL")
    assert conf.get_url_string() == DEFAULT_URL
    assert conf.get_url() == ZooKeeperURL("127.0.0.1:2181", "/zkflags")

    # Leave nothing cached from the deleted setting for the next tests: setting it sends
    # setting_changed again, and its restore at teardown too.
    settings.ZKFLAGS_URL = "zk://127.0.0.1:1/after"


def test_override_settings_of_the_url_takes_effect():
    before = conf.get_url()
    with override_settings(ZKFLAGS_URL="zk://other:2181/o"):
        assert conf.get_url() == ZooKeeperURL("other:2181", "/o")
    assert conf.get_url() == before


def test_override_settings_of_zkflags_takes_effect(settings):
    original = conf.get("STARTUP_TIMEOUT")
    assert conf.get("SESSION_TIMEOUT") == conf.DEFAULTS["SESSION_TIMEOUT"]
    with override_settings(ZKFLAGS={"STARTUP_TIMEOUT": 0.25, "ANONYMOUS_COOKIE": "uid"}):
        assert conf.get("STARTUP_TIMEOUT") == 0.25
        assert conf.get("ANONYMOUS_COOKIE") == "uid"
        # Unset keys come from the defaults, not from the previous value of ZKFLAGS.
        assert conf.get("SNAPSHOT_FILE") == conf.DEFAULTS["SNAPSHOT_FILE"]
    assert conf.get("STARTUP_TIMEOUT") == original
    settings.ZKFLAGS = {**settings.ZKFLAGS, "WRITE_TIMEOUT": 9.5}
    assert conf.get("WRITE_TIMEOUT") == 9.5


def test_snapshot_file_path_follows_the_settings(settings):
    settings.ZKFLAGS = {"SNAPSHOT_FILE": None}
    assert conf.snapshot_file_path() is None
    settings.ZKFLAGS = {"SNAPSHOT_FILE": "/tmp/x.snapshot"}
    assert conf.snapshot_file_path() == "/tmp/x.snapshot"
    settings.ZKFLAGS = {}
    first = conf.snapshot_file_path()
    settings.ZKFLAGS_URL = "zk://elsewhere:2181/other"
    second = conf.snapshot_file_path()
    assert first and second and first != second  # one file per URL
