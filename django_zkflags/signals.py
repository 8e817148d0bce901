"""Signals sent by django-zkflags."""

from django.dispatch import Signal

#: Sent in each process when its snapshot changes (from the watcher thread, or when a test
#: override starts or ends). Arguments: ``names`` (frozenset of changed flag names) and
#: ``snapshot`` (the new :class:`~django_zkflags.snapshot.Snapshot`).
flag_changed = Signal()
