"""Writes from Django to ZooKeeper, each with its audit row.

Every path that changes a flag (admin form, admin action, ORM ``save()``/``delete()``,
many-to-many changes, management command) ends here. The order inside one database
transaction is: database row, ZooKeeper write (the point of no return), audit row. A
refused ZooKeeper write raises :class:`~django_zkflags.zk.FlagWriteError` and the
transaction rolls back, so the database is unchanged and no audit row is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from django.db import router, transaction

from . import runtime
from .rules import FlagRule
from .zk import FlagWriteError, WriteResult

if TYPE_CHECKING:
    from .models import Flag, FlagChange

_UNSET: Any = object()


def _actor_fields(actor: Any) -> dict[str, Any]:
    if actor is None or not getattr(actor, "is_authenticated", False):
        return {"user": None, "username": ""}
    return {"user": actor, "username": actor.get_username()}


def record(result: WriteResult, action: str, actor: Any = None, source: str = "") -> FlagChange:
    from .models import FlagChange

    return FlagChange.objects.create(
        flag_name=result.name,
        action=action,
        before=result.before,
        after=result.after,
        zk_version=result.version,
        source=source,
        **_actor_fields(actor),
    )


def save_flag(
    flag: Flag,
    *,
    actor: Any = None,
    save_row: Callable[[], Any] | None = None,
    user_ids: Iterable[int] | None = None,
    group_ids: Iterable[int] | None = None,
    expected_version: int | None = _UNSET,
    source: str = "orm",
) -> FlagChange:
    """Write ``flag`` to ZooKeeper from ``expected_version`` (default: the row's
    ``zk_version``; None creates) and record it."""
    from .models import Flag

    if expected_version is _UNSET:
        expected_version = flag.zk_version
    with transaction.atomic(using=router.db_for_write(Flag)):
        if save_row is not None:
            save_row()
        doc = flag.document(user_ids, group_ids)
        result = runtime.writer().write(doc, expected_version)
        flag.zk_version = result.version
        Flag.objects.filter(pk=flag.pk).update(zk_version=result.version)
        change = record(result, "created" if expected_version is None else "changed", actor, source)
    flag._loaded_name = flag.name
    return change


def delete_flag(
    flag: Flag,
    *,
    actor: Any = None,
    delete_row: Callable[[], Any] | None = None,
    expected_version: int | None = _UNSET,
    source: str = "orm",
) -> Any:
    """Delete ``flag`` from ZooKeeper (from ``expected_version``) and the database."""
    from .models import Flag

    if expected_version is _UNSET:
        expected_version = flag.zk_version
    with transaction.atomic(using=router.db_for_write(Flag)):
        writer = runtime.writer()
        if expected_version is None:
            _doc, current_version = writer.read_flag(flag.name)
            if current_version is not None:
                raise FlagWriteError(
                    f"Flag {flag.name!r} exists in ZooKeeper but this row does not know its "
                    "version; reload it before deleting."
                )
        else:
            record(writer.delete(flag.name, expected_version), "deleted", actor, source)
        return delete_row() if delete_row is not None else None


def update_flag(
    name: str,
    change: Callable[[dict[str, Any]], dict[str, Any]],
    *,
    actor: Any = None,
    source: str = "",
) -> FlagChange | None:
    """Change one flag from what ZooKeeper holds now: read it (a missing or corrupt znode
    starts from the admin row, or from an empty rule), apply ``change`` to the document,
    write it from the version read, make the row mirror it, record it. Returns None when
    ``change`` changed nothing."""
    from .models import Flag

    with transaction.atomic(using=router.db_for_write(Flag)):
        writer = runtime.writer()
        doc, version = writer.read_flag(name)
        row = Flag.objects.filter(name=name).first()
        if doc is None or "corrupt" in doc:
            doc = row.document() if row is not None else FlagRule(name).to_document()
        new = change(dict(doc))
        if new == doc and version is not None:
            return None
        result = writer.write(new, version)
        mirror_document(row or Flag(name=name), result.after or new, result.version)
        return record(result, "created" if version is None else "changed", actor, source)


def set_everyone(
    flags: Iterable[Flag], everyone: bool | None, *, actor: Any = None, source: str = "admin action"
) -> list[FlagChange]:
    """Switch flags on or off for everyone, or back to their rules (bulk admin actions)."""
    changes = (
        update_flag(
            flag.name, lambda doc: {**doc, "everyone": everyone}, actor=actor, source=source
        )
        for flag in flags
    )
    return [change for change in changes if change is not None]


def mirror_document(flag: Flag, doc: dict[str, Any], version: int | None) -> None:
    """Make ``flag``'s row (and its many-to-many rows) mirror a ZooKeeper document.

    Nothing is written to ZooKeeper.
    """
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from .models import Flag

    flag.note = doc.get("note", "")
    flag.everyone = doc.get("everyone")
    percent = doc.get("percent")
    flag.percent = None if percent is None else Decimal(str(round(percent, 1)))
    flag.superusers = bool(doc.get("superusers"))
    flag.staff = bool(doc.get("staff"))
    flag.authenticated = bool(doc.get("authenticated"))
    flag.value = doc.get("value")
    flag.environments = doc.get("environments") or {}
    flag.zk_version = version
    flag._zkflags_defer = True
    try:
        if flag.pk is None:
            flag.save()
        else:
            Flag.objects.filter(pk=flag.pk).update(
                note=flag.note,
                everyone=flag.everyone,
                percent=flag.percent,
                superusers=flag.superusers,
                staff=flag.staff,
                authenticated=flag.authenticated,
                value=flag.value,
                environments=flag.environments,
                zk_version=version,
            )
        User = get_user_model()
        flag.users.set(User.objects.filter(pk__in=doc.get("users") or []))
        flag.groups.set(Group.objects.filter(pk__in=doc.get("groups") or []))
    finally:
        flag._zkflags_defer = False


def push_m2m_change(instance: Any, model: Any, pk_set: Iterable[int] | None, reverse: bool) -> None:
    """m2m_changed handler body: push the flag(s) whose users or groups changed."""
    from .models import Flag

    if not reverse:
        if not getattr(instance, "_zkflags_defer", False):
            save_flag(instance, source="orm m2m")
        return
    for flag in Flag.objects.filter(pk__in=pk_set or ()):
        save_flag(flag, source="orm m2m")
