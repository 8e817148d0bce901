from django.urls import path

from . import views

app_name = "django_zkflags"

urlpatterns = [
    path("health/", views.health, name="health"),
    path("flags.json", views.flags_json, name="flags"),
]
