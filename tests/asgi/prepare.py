"""``python -m tests.asgi.prepare``: the ASGI test project's database, ready to serve.

Migrates ``ASGI_TEST_DATABASE``, creates alice (in group beta) and bob (in no group),
logs both in, and prints their ids, session keys and beta's id as JSON.
"""

import json
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.asgi.settings")
os.environ["ASGI_TEST_AUTOSTART"] = "0"  # no ZooKeeper needed to write the database

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import Group, User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402


def main() -> None:
    call_command("migrate", verbosity=0, interactive=False)
    beta = Group.objects.create(name="beta")
    people = {}
    for name in ("alice", "bob"):
        user = User.objects.create_user(name)
        if name == "alice":
            user.groups.add(beta)
        client = Client()
        client.force_login(user)
        people[name] = {
            "id": user.pk,
            "session": client.cookies[settings.SESSION_COOKIE_NAME].value,
        }
    print(json.dumps({"people": people, "beta": beta.pk}))


if __name__ == "__main__":
    main()
