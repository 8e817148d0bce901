"""``{% load zkflags %}{% flag "name" %}...{% else %}...{% endflag %}``."""

from __future__ import annotations

from typing import Any

from django import template
from django.template.base import FilterExpression, NodeList, Parser, Token

from ..api import flag_is_active, flag_is_active_for_user, get_value

register = template.Library()


class FlagNode(template.Node):
    child_nodelists = ("nodelist_on", "nodelist_off")

    def __init__(
        self, name: FilterExpression, nodelist_on: NodeList, nodelist_off: NodeList
    ) -> None:
        self.name = name
        self.nodelist_on = nodelist_on
        self.nodelist_off = nodelist_off

    def render(self, context: Any) -> str:
        name = self.name.resolve(context, ignore_failures=True)
        if not isinstance(name, str):
            return self.nodelist_off.render(context)
        request = context.get("request")
        if request is not None:
            active = flag_is_active(request, name)
        else:
            active = flag_is_active_for_user(context.get("user"), name)
        return (self.nodelist_on if active else self.nodelist_off).render(context)


@register.tag("flag")
def do_flag(parser: Parser, token: Token) -> FlagNode:
    bits = token.split_contents()
    if len(bits) != 2:
        raise template.TemplateSyntaxError(f"{bits[0]!r} takes exactly one argument, the flag name")
    name = parser.compile_filter(bits[1])
    nodelist_on = parser.parse(("else", "endflag"))
    token = parser.next_token()
    if token.contents == "else":
        nodelist_off = parser.parse(("endflag",))
        parser.delete_first_token()
    else:
        nodelist_off = NodeList()
    return FlagNode(name, nodelist_on, nodelist_off)


@register.simple_tag(takes_context=True)
def flag_value(context: Any, name: str, default: Any = "") -> Any:
    """``{% flag_value "name" [default] %}`` or ``{% flag_value "name" as var %}``: the
    flag's live configuration value (from the request's snapshot when there is one)."""
    return get_value(name, default, context.get("request"))
