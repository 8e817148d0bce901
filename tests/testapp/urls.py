from django.contrib import admin
from django.urls import include, path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("home/", views.home, name="home"),
    path("guarded/", views.guarded, name="guarded"),
    path("guarded-redirect/", views.guarded_redirect, name="guarded-redirect"),
    path("guarded-cbv/", views.GuardedView.as_view(), name="guarded-cbv"),
    path("two-checks/", views.two_checks, name="two-checks"),
    path("async/", include("tests.testapp.async_urls")),
]
