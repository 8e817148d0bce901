"""The fleet: which snapshot each running process serves."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a mixin of FlagAdmin: type-check it as a ModelAdmin
    from django.contrib.admin import ModelAdmin as AdminBase
else:
    AdminBase = object


class FleetMixin(AdminBase):
    """The fleet page and the list's fleet summary (not built yet)."""
