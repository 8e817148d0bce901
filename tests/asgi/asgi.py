"""``uvicorn tests.asgi.asgi:application``: the ASGI test project."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.asgi.settings")

application = get_asgi_application()
