"""The OpenFeature provider's CONFIGURATION_CHANGED event after a save in another OS process:
``manage.py zkflags set`` run as a child process (the site settings of
tests/support/site_settings.py, a SQLite file of its own, the same ZKFLAGS_URL), with the
real SDK in this process. Everything else about the provider, in one process:
tests/integration/test_openfeature.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from openfeature.event import ProviderEvent

from django_zkflags.openfeature import ZKFlagsProvider
from tests.support.openfeature_events import OpenFeature

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.django_db


def manage(url: str, database: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m django ARGS`` in a process of its own, for the site at ``url``."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.support.site_settings",
        "ZKFLAGS_URL": url,
        "ZKFLAGS_TEST_DB": str(database),
        "SITE_AUTOSTART": "0",  # a command that writes, as an operator runs it
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "django", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_configuration_changed_after_a_save_in_another_process(zkflags: Any, tmp_path: Path):
    database = tmp_path / "site.sqlite3"
    manage(zkflags.url, database, "migrate", "-v0")
    of = OpenFeature(ZKFlagsProvider())
    try:
        of.events.wait(ProviderEvent.PROVIDER_READY)
        mark = len(of.events.kinds())
        manage(zkflags.url, database, "zkflags", "set", "banner", "--on", "--value", '"hello"')
        [changed] = of.events.wait(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, after=mark)
        assert changed.flags_changed == ["banner"]
        assert of.client.get_boolean_value("banner", False) is True
        assert of.client.get_string_value("banner", "") == "hello"

        mark = len(of.events.kinds())
        manage(zkflags.url, database, "zkflags", "set", "banner", "--off")
        [changed] = of.events.wait(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, after=mark)
        assert changed.flags_changed == ["banner"]
        details = of.client.get_boolean_details("banner", True)
        assert (details.value, details.reason) == (False, "DISABLED")
        assert details.flag_metadata["version"] == 1
    finally:
        of.close()
