"""Django for the benchmark's own process, configured in code: django_zkflags, waffle (when
installed), auth, contenttypes, sessions, SQLite in a temp dir (migrations run), LocMem and
Redis caches, and two URLconfs of one pattern each (the same trivial view with and without
``@flag_required``)."""

from __future__ import annotations

import os
import sys
import types
import uuid
from typing import Any

URLCONF = "zkflags_bench_urls"  # /page/ -> the view with @flag_required
URLCONF_PLAIN = "zkflags_bench_urls_plain"  # /page/ -> the same view without it

MIDDLEWARE_PLAIN = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
MIDDLEWARE_FLAGS = [*MIDDLEWARE_PLAIN, "django_zkflags.middleware.FlagMiddleware"]


def configure_django(tmp: str, zk_url: str, redis_port: int | None, have_waffle: bool) -> None:
    import django
    from django.conf import settings

    caches: dict[str, Any] = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "zkflags-bench",
        }
    }
    if redis_port is not None:
        caches["redis"] = {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{redis_port}/0",
        }
    apps = [
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django_zkflags",
    ]
    if have_waffle:
        apps.insert(3, "waffle")
    settings.configure(
        DEBUG=False,
        SECRET_KEY="zkflags-bench-" + uuid.uuid4().hex,
        ALLOWED_HOSTS=["*"],
        USE_TZ=True,
        INSTALLED_APPS=apps,
        MIDDLEWARE=MIDDLEWARE_FLAGS,
        ROOT_URLCONF=URLCONF,
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": os.path.join(tmp, "bench.sqlite3"),
            }
        },
        CACHES=caches,
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {"context_processors": []},
            }
        ],
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        ZKFLAGS_URL=zk_url,
        ZKFLAGS={
            "AUTOSTART": False,
            "STARTUP_TIMEOUT": 15.0,
            "SNAPSHOT_FILE": os.path.join(tmp, "parent.snapshot"),
        },
        WAFFLE_CACHE_NAME="default",
    )
    install_urlconf()
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def install_urlconf() -> None:
    """The benchmark's URLconf: the same trivial view with and without @flag_required."""
    from django.http import HttpResponse
    from django.urls import path

    from django_zkflags.decorators import flag_required

    def plain_view(request: Any) -> HttpResponse:
        return HttpResponse(b"ok")

    @flag_required("guarded")
    def flagged_view(request: Any) -> HttpResponse:
        return HttpResponse(b"ok")

    # Two URLconfs of one pattern each, so that resolving costs the same in both.
    for name, view in ((URLCONF, flagged_view), (URLCONF_PLAIN, plain_view)):
        module = types.ModuleType(name)
        module.plain_view = plain_view  # type: ignore[attr-defined]
        module.flagged_view = flagged_view  # type: ignore[attr-defined]
        module.urlpatterns = [path("page/", view)]  # type: ignore[attr-defined]
        sys.modules[name] = module
