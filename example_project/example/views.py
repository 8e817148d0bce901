from django.http import JsonResponse
from django.shortcuts import render

import django_zkflags
from django_zkflags.decorators import flag_required


def home(request):
    return render(request, "home.html", {"active": request.flags.active_names()})


@flag_required("beta-page", redirect_to="home")
def beta(request):
    return render(request, "beta.html")


def status(request):
    """What this process sees (handy when flipping flags in the admin)."""
    return JsonResponse(django_zkflags.status())
