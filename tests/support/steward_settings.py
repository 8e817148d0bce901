"""The settings of :mod:`tests.support.site_settings` for a site whose processes run
stewards: a short ZooKeeper session (``ZKFLAGS_TEST_SESSION_TIMEOUT``, seconds), so that a
steward killed with SIGKILL hands over within a few seconds, as a test can wait for."""

import os

from tests.support.site_settings import *  # noqa: F403
from tests.support.site_settings import ZKFLAGS as SITE_ZKFLAGS

ZKFLAGS = {
    **SITE_ZKFLAGS,
    "SESSION_TIMEOUT": float(os.environ.get("ZKFLAGS_TEST_SESSION_TIMEOUT", "10")),
}
