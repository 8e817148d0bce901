import threading

from django.http import HttpResponse
from django.shortcuts import render
from django.views import View

from django_zkflags import flag_is_active
from django_zkflags.decorators import FlagRequiredMixin, flag_required

#: Set by a test to run code between the two checks of two_checks.
between_checks = threading.local()


def home(request):
    return render(request, "home.html")


@flag_required("guarded")
def guarded(request):
    return HttpResponse("guarded content")


@flag_required("guarded", redirect_to="home")
def guarded_redirect(request):
    return HttpResponse("guarded content")


class GuardedView(FlagRequiredMixin, View):
    flag_name = "guarded"

    def get(self, request):
        return HttpResponse("guarded cbv content")


def two_checks(request):
    first = flag_is_active(request, "consistent")
    hook = getattr(between_checks, "hook", None)
    if hook is not None:
        hook()
    second = flag_is_active(request, "consistent")
    return HttpResponse(f"{first} {second}")
