"""An exception reporter filter that hides the ZooKeeper password.

Django's ``SafeExceptionReporterFilter`` hides a setting by its *name* (API, TOKEN, KEY,
SECRET, PASS, SIGNATURE, ...), so ``ZKFLAGS_URL = "zk://alice:s3cr3t@zk1/flags"`` is shown
in full in the settings of the technical 500 page and of the error e-mails to ``ADMINS``,
and in ``request.META`` where the server copies the environment into it (``runserver``
does). It hides frame variables only with ``DEBUG = False``, and only those of functions
marked ``sensitive_variables``. Use this one instead::

    DEFAULT_EXCEPTION_REPORTER_FILTER = "django_zkflags.debug.SafeExceptionReporterFilter"

On top of Django's rules it masks the password -- in every form in which it can appear,
see :mod:`django_zkflags.redaction` -- in settings, ``request.META`` and frame variables,
with ``DEBUG`` on or off. System check ``zkflags.W004`` says when the configured filter
would show it.
"""

from __future__ import annotations

from typing import Any

from django.views import debug

from .redaction import hide


class SafeExceptionReporterFilter(debug.SafeExceptionReporterFilter):
    """Django's filter, plus the ZooKeeper password masked wherever it would be shown."""

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        # Also what get_safe_request_meta and get_safe_cookies use.
        return hide(super().cleanse_setting(key, value))

    def get_traceback_frame_variables(self, request: Any, tb_frame: Any) -> Any:
        return [
            (name, hide(value))
            for name, value in super().get_traceback_frame_variables(request, tb_frame)
        ]
