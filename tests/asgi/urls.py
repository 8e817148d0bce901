from django.urls import include, path

urlpatterns = [path("async/", include("tests.testapp.async_urls"))]
