"""``python manage.py consume HANDLER``: an AMQP consumer with Kubernetes probes."""

from __future__ import annotations

from typing import Any

from hurricane.config.options import CONSUME_OPTIONS, ConsumeOptions
from hurricane.management.base import HurricaneCommand


class Command(HurricaneCommand[ConsumeOptions]):
    help = (
        "Consume a RabbitMQ queue with a handler class derived from "
        "hurricane.amqp.basehandler.TopicHandler, with startup/readiness/liveness probes "
        "and Prometheus metrics on the probe port. Options can also be set with the Django "
        "setting or environment variable HURRICANE_<OPTION>; the broker connection with "
        "AMQP_HOST, AMQP_PORT, AMQP_VHOST, AMQP_USER and AMQP_PASSWORD."
    )
    options_class = ConsumeOptions
    option_spec = CONSUME_OPTIONS
    logger_name = "hurricane.amqp.general"

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "handler_argument",
            nargs="?",
            metavar="HANDLER",
            help="Dotted path of the handler class, e.g. myapp.consumers.MyHandler.",
        )
        super().add_arguments(parser)

    def handle(self, *args: Any, **command_line: Any) -> None:
        positional = command_line.pop("handler_argument")
        if positional and command_line.get("handler") not in (None, positional):
            self.fail("the handler is given twice: as HANDLER and with --handler", command_line)
        command_line["handler"] = positional or command_line.get("handler")
        super().handle(*args, **command_line)

    def start(self, options: ConsumeOptions) -> int:
        from hurricane.amqp.runtime import run_consumer

        return run_consumer(options)
