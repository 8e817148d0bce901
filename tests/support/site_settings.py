"""Settings of a small site run in its own processes by system tests: a SQLite file
database (``ZKFLAGS_TEST_DB``) that several processes share, ``ZKFLAGS_URL`` from the
environment, the watcher started by ``AppConfig.ready`` as in a real deployment."""

import os

SECRET_KEY = "site-tests-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_zkflags",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "django_zkflags.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("ZKFLAGS_TEST_DB", ":memory:"),
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ZKFLAGS = {
    "SNAPSHOT_FILE": None,
    "STARTUP_TIMEOUT": 5.0,
    "WRITE_TIMEOUT": 5.0,
    # SITE_AUTOSTART=0: a process that does not start the watcher (nor settle at start).
    "AUTOSTART": os.environ.get("SITE_AUTOSTART", "1") == "1",
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django_zkflags": {"handlers": ["stderr"], "level": "INFO"}},
}
