"""Signal receivers that keep ORM-side many-to-many edits flowing to ZooKeeper."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import m2m_changed
from django.dispatch import receiver

from .models import Flag
from .services import push_m2m_change


@receiver(m2m_changed, sender=Flag.users.through, dispatch_uid="zkflags-users")
@receiver(m2m_changed, sender=Flag.groups.through, dispatch_uid="zkflags-groups")
def flag_members_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any
) -> None:
    if reverse and action == "pre_clear":
        # A user's or group's flags are being cleared: remember which, pk_set is None later.
        instance._zkflags_cleared = list(instance.zkflags.values_list("pk", flat=True))
        return
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    if reverse and action == "post_clear":
        pk_set = getattr(instance, "_zkflags_cleared", [])
    if action in ("post_add", "post_remove") and not pk_set:
        return
    push_m2m_change(instance, sender, pk_set, reverse)
