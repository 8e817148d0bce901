from django.http import JsonResponse

from .report import blocking_sleep, flag_state


def state(request, name):
    # ?hold=0.2 keeps this worker busy so that concurrent requests reach the others.
    hold = float(request.GET.get("hold", "0"))
    if hold:
        blocking_sleep(hold)
    return JsonResponse(flag_state(name))
