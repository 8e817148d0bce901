from django.urls import path

from . import views

urlpatterns = [path("state/<str:name>/", views.state)]
