"""Async views of the test app (included under ``async/`` by tests/testapp/urls.py, and
served by a real ASGI server in tests/system/test_asgi.py through tests/asgi/).

Each answers JSON (or a short text) and never touches the database synchronously: any
``SynchronousOnlyOperation`` is a 500.
"""

from django.http import HttpResponse, JsonResponse
from django.template import Context, Template
from django.views import View

from django_zkflags import (
    aflag_is_active,
    aflag_is_active_for_user,
    aget_value,
    flag_is_active,
)
from django_zkflags.decorators import FlagRequiredMixin, flag_required
from django_zkflags.evaluation import aload_lazy
from django_zkflags.rules import thaw_value

# The second block is never awaited first: it answers from the group ids the first
# block's await fetched (or from the memoised answer when it names the same flag).
TEMPLATE = Template(
    "{% load zkflags %}"
    "{% flag first %}on{% else %}off{% endflag %} "
    "{% flag second %}on{% else %}off{% endflag %}"
)


async def auser(request):
    """``await request.auser()`` (Django 5.0+); Django 4.2 loads ``request.user`` in a
    thread."""
    if hasattr(request, "auser"):
        return await request.auser()
    return await aload_lazy(request.user)


def _names(request):
    return [name for name in request.GET.get("names", "").split(",") if name]


async def checks(request):
    """``?names=a,b``: ``await aflag_is_active`` for each, and who asked."""
    answers = {name: await aflag_is_active(request, name) for name in _names(request)}
    user = await auser(request)
    return JsonResponse({"flags": answers, "user": user.get_username() or None})


async def sync_after_auser(request):
    """``await request.auser()``, then the sync ``flag_is_active`` (percent rules)."""
    await auser(request)
    return JsonResponse(
        {"flags": {name: flag_is_active(request, name) for name in _names(request)}}
    )


async def for_user(request):
    """``aflag_is_active_for_user(await auser(request), name)`` (group rules)."""
    user = await auser(request)
    return JsonResponse(
        {"flags": {name: await aflag_is_active_for_user(user, name) for name in _names(request)}}
    )


async def template(request):
    """``?first=a&second=b``: await the first, then render both with ``{% flag %}``."""
    first, second = request.GET["first"], request.GET["second"]
    await aflag_is_active(request, first)
    context = Context({"request": request, "first": first, "second": second})
    return HttpResponse(TEMPLATE.render(context))


async def value(request, name):
    return JsonResponse({"value": thaw_value(await aget_value(name, "unset", request))})


async def off(request):
    return HttpResponse("the flag is off")


@flag_required("guarded")
async def guarded(request):
    return HttpResponse("async guarded content")


@flag_required("guarded", redirect_to="async-off")
async def guarded_redirect(request):
    return HttpResponse("async guarded content")


class GuardedView(FlagRequiredMixin, View):
    flag_name = "guarded"

    async def get(self, request):
        return HttpResponse("async guarded cbv content")


class GuardedRedirectView(GuardedView):
    flag_redirect_to = "async-off"
