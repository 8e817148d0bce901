"""Settings of the ASGI test project (tests/system/test_asgi.py serves it with uvicorn).

The async views of the test app (tests/testapp/async_views.py) behind the usual session,
auth and flag middleware. ``ZKFLAGS_URL`` is not set here: django-zkflags reads the
environment variable of the same name, which the test points at a fresh root of its
ZooKeeper. The database is the SQLite file named by ``ASGI_TEST_DATABASE``.
"""

import os

from tests.settings import SECRET_KEY  # the test reads the signed anonymous cookie back

__all__ = ["SECRET_KEY"]

DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django_zkflags",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_zkflags.middleware.FlagMiddleware",
]
ROOT_URLCONF = "tests.asgi.urls"
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["ASGI_TEST_DATABASE"]}
}
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ZKFLAGS = {
    "AUTOSTART": os.environ.get("ASGI_TEST_AUTOSTART", "1") == "1",
    "SNAPSHOT_FILE": None,  # the flags come from ZooKeeper, nowhere else
    "STARTUP_TIMEOUT": 5.0,
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django_zkflags": {"handlers": ["stderr"], "level": "INFO"},
        # A 500's traceback (a SynchronousOnlyOperation, say) lands in the server's log.
        "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
    },
}
