"""Settings of the example project: SQLite next to this file, ZooKeeper from ZKFLAGS_URL.

Settings come from the environment, else from ``example_project/.env`` (which ``make demo``
writes, so that ``manage.py zkflags ...`` finds the demo's ZooKeeper with no export)."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")  # the environment wins over the file

SECRET_KEY = env.str("SECRET_KEY", default="example-project-not-secret")
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_zkflags",
    "example",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_zkflags.middleware.FlagMiddleware",
]
ROOT_URLCONF = "example.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
STATIC_URL = "static/"

# zk://[user:password@]host:port[,host:port]/root -- `make demo` starts a local node on 2181.
ZKFLAGS_URL = env.str("ZKFLAGS_URL", default="zk://127.0.0.1:2181/zkflags-example")
# The last-known snapshot on disk: by default one file per ZooKeeper location in a private
# per-user directory (never shared between two demos pointed at different ZooKeepers).
ZKFLAGS = {
    "SNAPSHOT_FILE": env.str("ZKFLAGS_SNAPSHOT_FILE", default="default"),
    "SESSION_TIMEOUT": env.float("ZKFLAGS_SESSION_TIMEOUT", default=10.0),
}

# Django's own logging stays (runserver's request lines, tracebacks); django-zkflags says
# what it does at INFO: quiet while all is well, a line when something happens.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django_zkflags": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
