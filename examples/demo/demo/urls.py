from django.urls import path

from notes import views

urlpatterns = [
    path("", views.index),
    path("live/", views.live),
    path("notes/", views.notes),
    path("notes/<int:pk>/", views.note_detail),
]
