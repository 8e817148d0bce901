"""Create the demo admin user and the demo flags (idempotent)."""

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from django_zkflags import services
from django_zkflags.rules import FlagRule

USERNAME = "admin"
PASSWORD = "zkflags-demo"

DEMO_FLAGS = (
    FlagRule("banner", note="The banner on the home page", everyone=True, staff=True),
    FlagRule("beta-page", note="The /beta/ page", staff=True),
    FlagRule(
        "welcome-text",
        note="Live text under the title",
        staff=True,
        value="Hello from ZooKeeper.",
    ),
)


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
        # ZooKeeper and the SQLite file can outlive each other between demo runs: make the
        # rows mirror what ZooKeeper holds, or, if ZooKeeper lost everything, write the rows
        # back to it.
        if services.check().zookeeper_lost_data:
            call_command("zkflags", "restore", stdout=self.stdout)
        else:
            call_command("zkflags", "repair", stdout=self.stdout)
        for rule in DEMO_FLAGS:
            if not services.read_flag(rule.name).exists:
                services.save_flag(rule, expected_version=None, actor=user, source="demo_setup")
        self.stdout.write(f"Admin user: {USERNAME} / password: {PASSWORD}")
