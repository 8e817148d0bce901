"""The async views' URLs, included under ``async/``."""

from django.urls import path

from . import async_views

urlpatterns = [
    path("checks/", async_views.checks, name="async-checks"),
    path("sync-after-auser/", async_views.sync_after_auser, name="async-sync-after-auser"),
    path("for-user/", async_views.for_user, name="async-for-user"),
    path("template/", async_views.template, name="async-template"),
    path("value/<str:name>/", async_views.value, name="async-value"),
    path("off/", async_views.off, name="async-off"),
    path("guarded/", async_views.guarded, name="async-guarded"),
    path("guarded-redirect/", async_views.guarded_redirect, name="async-guarded-redirect"),
    path("guarded-cbv/", async_views.GuardedView.as_view(), name="async-guarded-cbv"),
    path(
        "guarded-cbv-redirect/",
        async_views.GuardedRedirectView.as_view(),
        name="async-guarded-cbv-redirect",
    ),
]
