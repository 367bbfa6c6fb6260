from django.urls import path

from webproject import views

urlpatterns = [
    path("plain", views.plain),
    path("json", views.json_view),
    path("db", views.db),
    path("sleep", views.sleep),
    path("asleep", views.asleep),
    path("grow", views.grow),
]
