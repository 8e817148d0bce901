"""Signal receivers that keep ORM-side many-to-many edits flowing to ZooKeeper."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import m2m_changed
from django.dispatch import receiver

from .models import Flag
from .services import push_m2m_change

_FIELD_BY_THROUGH = {Flag.users.through: "users", Flag.groups.through: "groups"}


def _linked_pks(sender: Any, instance: Any, reverse: bool, pk_set: Any) -> list[int]:
    """The pks on the other side linked to ``instance`` now (among ``pk_set`` if given)."""
    manager = instance.zkflags if reverse else getattr(instance, _FIELD_BY_THROUGH[sender])
    queryset = manager.all() if pk_set is None else manager.filter(pk__in=pk_set)
    return list(queryset.values_list("pk", flat=True))


@receiver(m2m_changed, sender=Flag.users.through, dispatch_uid="zkflags-users")
@receiver(m2m_changed, sender=Flag.groups.through, dispatch_uid="zkflags-groups")
def flag_members_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any
) -> None:
    if not reverse and getattr(instance, "_zkflags_defer", False):
        return  # the caller writes ZooKeeper itself (admin form, mirror_document)
    if action in ("pre_remove", "pre_clear"):
        # Remember what is really linked: pk_set is None after a clear, and a remove
        # reports every pk asked for, linked or not. Nothing linked: nothing to write.
        instance._zkflags_unlinked = _linked_pks(
            sender, instance, reverse, pk_set if action == "pre_remove" else None
        )
        return
    if action in ("post_remove", "post_clear"):
        pk_set = vars(instance).pop("_zkflags_unlinked", None)
    if action not in ("post_add", "post_remove", "post_clear") or not pk_set:
        return
    push_m2m_change(instance, sender, pk_set, reverse)
