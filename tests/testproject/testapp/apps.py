from django.apps import AppConfig


class TestappConfig(AppConfig):
    name = "testapp"

    def ready(self) -> None:
        from testapp import checks, metrics  # noqa: F401
