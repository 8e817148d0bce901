"""Signal receivers: changes made through the ORM reach ZooKeeper through
:mod:`django_zkflags.services`, the one write path.

* ``Flag`` saved (``save()``, ``objects.create()``): its rule is written to ZooKeeper
  first; a refusal raises and the row is not saved.
* ``Flag`` deleted: its znode is deleted first; a refusal raises and the row stays.
* Users or groups of a flag added or removed, from either side: the flag is written again.
* A user or a group deleted: taken out of every flag that lists it (a cascade delete sends
  no ``m2m_changed``).

``services`` writes rows with ``update()``, ``bulk_create()`` and the through tables, which
send no model signals, so its own mirroring never comes back here.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db.models.signals import m2m_changed, pre_delete, pre_save
from django.dispatch import receiver

from . import services
from .models import Flag

_LINKS = (Flag.users.through, Flag.groups.through)


@receiver(pre_save, sender=Flag, dispatch_uid="zkflags-flag-save")
def flag_saved(sender: Any, instance: Flag, raw: bool = False, **kwargs: Any) -> None:
    if not raw:  # loaddata writes rows as they are: ZooKeeper is restored with 'restore'
        services.push_row(instance)


@receiver(pre_delete, sender=Flag, dispatch_uid="zkflags-flag-delete")
def flag_deleted(sender: Any, instance: Flag, **kwargs: Any) -> None:
    services.delete_flag(
        instance.name,
        expected_version=instance.zk_version,
        actor=services.current_actor(),
        source="orm",
    )


@receiver(m2m_changed, sender=Flag.users.through, dispatch_uid="zkflags-users")
@receiver(m2m_changed, sender=Flag.groups.through, dispatch_uid="zkflags-groups")
def flag_links_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any
) -> None:
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    if not reverse:
        services.push_row(instance, source="orm m2m")  # keeps the instance's zk_version current
    elif action == "post_clear":
        # pk_set is None after a clear: the flags that listed this user or group are the
        # ones ZooKeeper lists it in.
        kind = "users" if sender is Flag.users.through else "groups"
        services.push_links(services.flags_listing(kind, instance.pk))
    elif pk_set:
        services.push_links(pk_set)


@receiver(pre_delete, sender=settings.AUTH_USER_MODEL, dispatch_uid="zkflags-user-deleted")
def user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    services.remove_member("users", instance.pk, source="user deleted")


@receiver(pre_delete, sender=Group, dispatch_uid="zkflags-group-deleted")
def group_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    services.remove_member("groups", instance.pk, source="group deleted")
