"""The admin: flags edited in ZooKeeper (:mod:`.flags`, with the list in
:mod:`.changelist` and the environments page in :mod:`.environments`), and the audit log
(:mod:`.audit`)."""

from django.contrib import admin

from ..models import Flag, FlagChange
from .audit import FlagChangeAdmin
from .flags import FlagAdmin

admin.site.register(Flag, FlagAdmin)
admin.site.register(FlagChange, FlagChangeAdmin)

__all__ = ["FlagAdmin", "FlagChangeAdmin"]
