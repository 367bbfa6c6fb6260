from django.apps import AppConfig
from django.conf import settings


class NotesConfig(AppConfig):
    name = "notes"

    def ready(self) -> None:
        from notes import checks  # noqa: F401  (registers the liveness check)

        if settings.DEMO_LIVE_PAGE:
            from notes import live  # noqa: F401  (announces new notes to the live page)
