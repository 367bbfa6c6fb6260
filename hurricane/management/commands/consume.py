"""``python manage.py consume HANDLER``: an AMQP consumer with Kubernetes probes."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hurricane.options import CONSUME_OPTIONS, OptionError, add_arguments, resolve


class Command(BaseCommand):
    help = (
        "Consume a RabbitMQ queue with a handler class derived from "
        "hurricane.amqp.basehandler.TopicHandler, with startup/readiness/liveness probes "
        "and Prometheus metrics on the probe port. Options can also be set with the Django "
        "setting or environment variable HURRICANE_<OPTION>; the broker connection with "
        "AMQP_HOST, AMQP_PORT, AMQP_VHOST, AMQP_USER and AMQP_PASSWORD."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "handler_argument",
            nargs="?",
            metavar="HANDLER",
            help="Dotted path of the handler class, e.g. myapp.consumers.MyHandler.",
        )
        add_arguments(parser, CONSUME_OPTIONS)

    def handle(self, *args: Any, **command_line: Any) -> None:
        from hurricane.amqp.runtime import run_consumer
        from hurricane.server.debugging import DebuggerError
        from hurricane.server.runtime import StartupError

        positional = command_line.pop("handler_argument")
        if positional and command_line.get("handler") not in (None, positional):
            raise CommandError("the handler is given twice: as HANDLER and with --handler")
        command_line["handler"] = positional or command_line.get("handler")
        try:
            options = resolve(CONSUME_OPTIONS, command_line, settings)
            exit_code = run_consumer(options)
        except (OptionError, StartupError, DebuggerError) as error:
            raise CommandError(str(error)) from None
        if exit_code:
            sys.exit(exit_code)
