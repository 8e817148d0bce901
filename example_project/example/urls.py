from django.contrib import admin
from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("beta/", views.beta, name="beta"),
    path("status/", views.status, name="status"),
    path("admin/", admin.site.urls),
    path("zkflags/", include("django_zkflags.urls")),  # /zkflags/health/
]
