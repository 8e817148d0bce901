"""The admin as a browser drives it: its URLs, the POST data of its forms, its messages.

Shared by tests/integration and tests/system (the admin with ZooKeeper stopped).
"""

from __future__ import annotations

from typing import Any

from django.contrib.messages import get_messages
from django.test import Client

from django_zkflags.models import Flag

ADMIN = "/admin/django_zkflags/flag/"
ADD_URL = f"{ADMIN}add/"
CONFLICT_TEXT = "was changed by someone else while you were editing it"
UNREACHABLE_TEXT = "ZooKeeper is unreachable"


def editor_client(username: str = "editor") -> Client:
    """A test client logged in as a staff user who may view and change flags (no more)."""
    from django.contrib.auth.models import Permission, User

    editor = User.objects.create_user(username, is_staff=True)
    editor.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="django_zkflags", codename__in=("view_flag", "change_flag")
        )
    )
    client = Client()
    client.force_login(editor)
    return client


def change_url(flag: Flag) -> str:
    return f"{ADMIN}{flag.pk}/change/"


def delete_url(flag: Flag) -> str:
    return f"{ADMIN}{flag.pk}/delete/"


def form_data(name: str | None = None, **fields: Any) -> dict[str, Any]:
    """POST data as the admin's change form sends it (unchecked boxes are left out)."""
    values: dict[str, Any] = {
        "note": "",
        "everyone": None,
        "percent": None,
        "superusers": False,
        "staff": False,
        "authenticated": False,
        "users": [],
        "groups": [],
        "zk_version_seen": None,
    }
    values.update(fields)
    if name is not None:
        values["name"] = name
    return encode(values)


def encode(values: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            data[key] = ""
        elif isinstance(value, bool) and key != "everyone":
            if value:
                data[key] = "on"
        elif isinstance(value, (list, tuple)):
            data[key] = [str(getattr(v, "pk", v)) for v in value]
        else:
            data[key] = str(value)
    return data


def data_from_page(response: Any, **changes: Any) -> dict[str, Any]:
    """What a browser would submit from a rendered change form, with ``changes`` applied."""
    form = response.context["adminform"].form
    values = {name: form[name].value() for name in form.fields}
    values.update(changes)
    return encode(values)


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def make_flag(client: Client, name: str, **fields: Any) -> Flag:
    response = client.post(ADD_URL, form_data(name, **fields))
    assert response.status_code == 302, (
        getattr(response, "context", None) and response.context["adminform"].form.errors
    )
    return Flag.objects.get(name=name)


def warnings_on_list(admin_client: Client) -> list[str]:
    """The messages the flag list page shows."""
    response = admin_client.get(ADMIN)
    assert response.status_code == 200
    return [str(m) for m in get_messages(response.wsgi_request)]
