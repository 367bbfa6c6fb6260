from django.apps import AppConfig


class HurricaneConfig(AppConfig):
    name = "hurricane"
    verbose_name = "Hurricane"
