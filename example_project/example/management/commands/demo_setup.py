"""Create the demo admin user and the demo flags (idempotent)."""

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from django_zkflags.models import Flag

USERNAME = "admin"
PASSWORD = "zkflags-demo"


class Command(BaseCommand):
    help = "Create the demo admin user and demo flags."

    def handle(self, *args, **options):
        User = get_user_model()
        user = User.objects.filter(username=USERNAME).first()
        if user is None:
            user = User.objects.create_superuser(USERNAME, "admin@example.com", PASSWORD)
        else:
            user.set_password(PASSWORD)
            user.save()
        # ZooKeeper keeps its data across demo runs even if the SQLite file was removed.
        call_command("zkflags", "repair", stdout=self.stdout)
        for name, note, everyone, value in (
            ("banner", "The banner on the home page", True, None),
            ("beta-page", "The /beta/ page", None, None),
            ("welcome-text", "Live text under the title", None, "Hello from ZooKeeper."),
        ):
            if not Flag.objects.filter(name=name).exists():
                Flag(name=name, note=note, everyone=everyone, staff=True, value=value).save(
                    actor=user
                )
        self.stdout.write(f"Admin user: {USERNAME} / password: {PASSWORD}")
