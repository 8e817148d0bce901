"""``manage.py zkflags references`` on a sample project, against the flags a real
ZooKeeper holds."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from django_zkflags.references import scan, scan_python, scan_template

SAMPLE = {
    "shop/views.py": """
from django_zkflags import flag_is_active, get_value
from django_zkflags.decorators import flag_required, FlagRequiredMixin
import django_zkflags

@flag_required("checkout-v2")
def checkout(request):
    if django_zkflags.flag_is_active(request, "express-pay"):
        limit = get_value("cart.limit", 10)
    if request.flags["banner"] or request.flags.is_active("recommendations"):
        pass
    variant = request.GET["v"]
    if flag_is_active(request, f"experiment-{variant}"):  # built at run time
        pass
    return flag_is_active(request, "gone-flag")

class Beta(FlagRequiredMixin):
    flag_name = "beta-page"
""",
    "shop/templates/shop/cart.html": """{% load zkflags %}
{% flag "banner" %}<p>hi</p>{% endflag %}
{% flag_value 'cart.note' "" %}
{% flag dynamic_name %}x{% endflag %}
""",
    ".venv/lib/site-packages/other/views.py": 'flag_is_active(request, "vendored")',
    "shop/broken.py": "def (:",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for relative, text in SAMPLE.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_scanner_finds_literal_names_and_dynamic_calls(project):
    result = scan([project])
    assert result.names == {
        "checkout-v2",
        "express-pay",
        "cart.limit",
        "banner",
        "recommendations",
        "gone-flag",
        "beta-page",
        "cart.note",
    }
    assert sorted((r.how, r.line) for r in result.dynamic) == [
        ("flag_is_active", 13),
        ("{% flag %}", 4),
    ]
    assert [e.split(":")[0] for e in result.errors] == [str(project / "shop/broken.py")]
    assert "vendored" not in result.names  # a virtualenv is not the project


def test_scan_functions_alone():
    assert [r.name for r in scan_python('x = flag_is_active_for_user(u, name="n")', "f.py")] == [
        "n"
    ]
    assert [r.name for r in scan_template("{%- flag_value 'v' as x %}", "t.html")] == ["v"]


def test_unused_missing_and_dynamic_against_zookeeper(zkflags, project, settings):
    for name in ("checkout-v2", "express-pay", "banner", "old-campaign"):
        zkflags.write(name, everyone=True)
    settings.ZKFLAGS = {**settings.ZKFLAGS, "FLAGS": {"beta-page": False}}
    out = StringIO()
    call_command("zkflags", "references", "--path", str(project), "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["unused"] == ["old-campaign"]
    missing = {item["name"]: item["references"] for item in report["missing"]}
    # beta-page is declared in settings: not missing. The others are nowhere.
    assert sorted(missing) == ["cart.limit", "cart.note", "gone-flag", "recommendations"]
    assert missing["gone-flag"][0]["line"] == 15
    assert len(report["dynamic"]) == 2
    assert "cannot be found by a scan" in report["note"]

    text = StringIO()
    with pytest.raises(CommandError, match="1 flag"):
        call_command(
            "zkflags", "references", "--path", str(project), "--fail-on-unused", stdout=text
        )
    assert "old-campaign" in text.getvalue()
    assert "Names built at run time" in text.getvalue()
