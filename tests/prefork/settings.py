"""Settings of the pre-fork test project.

``ZKFLAGS_URL`` is not set here: django-zkflags then reads the environment variable of the
same name, which the test sets to a fresh root on its ZooKeeper. The watcher starts in
``AppConfig.ready`` (``AUTOSTART`` is on), as in a real deployment.
"""

SECRET_KEY = "prefork-tests-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_zkflags",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "tests.prefork.urls"
DATABASES: dict[str, dict[str, str]] = {}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ZKFLAGS = {
    "SNAPSHOT_FILE": None,  # every process must get its flags from ZooKeeper
    "STARTUP_TIMEOUT": 5.0,
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django_zkflags": {"handlers": ["stderr"], "level": "INFO"}},
}
