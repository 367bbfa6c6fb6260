"""What ``serve`` and ``consume`` share: the options resolved once, the runtime
started, and a failure before it runs reported as one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, Generic, NoReturn, TypeVar

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hurricane.config.options import Option, OptionError, Options, add_arguments, resolve_values
from hurricane.config.plan import DryRunError, described_plan, dry_run_requested
from hurricane.platform.logs import json_line

OptionsT = TypeVar("OptionsT", bound=Options)
UNRECOGNIZED = "unrecognized arguments: "


def without_argument_values(message: str) -> str:
    """argparse's complaint about unknown arguments names their flags only: the words
    after a misspelt ``--amqp-passwort`` may be a secret."""
    if not message.startswith(UNRECOGNIZED):
        return message
    flags = [word.partition("=")[0] for word in message[len(UNRECOGNIZED) :].split()]
    shown = [flag for flag in flags if flag.startswith("-")]
    return UNRECOGNIZED + " ".join([*shown, "(values not shown)"])


class HurricaneCommand(BaseCommand, Generic[OptionsT]):
    """A Hurricane runtime as a management command: ``option_spec`` (the table of
    ``options_class``) on the command line, ``start(options)`` returns the exit code."""

    options_class: type[OptionsT]
    option_spec: tuple[Option, ...] = ()
    logger_name = "hurricane"
    # Hurricane runs Django's system checks itself once logging is set up
    # (hurricane.server.run_process), so that their messages are log records: JSON
    # lines with --log-format json, not a block of text on stderr.
    requires_system_checks: list[str] = []

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        # No abbreviations: ``--amqp-pass VALUE`` would otherwise be taken for
        # --amqp-password, and nothing that masks secrets by the option's name (the
        # entrypoint's summary line) would know to hide it.
        parser = super().create_parser(prog_name, subcommand, allow_abbrev=False, **kwargs)
        # Django's CommandParser.error raises CommandError or exits as argparse's does.
        complain: Callable[[str], NoReturn] = parser.error

        def error(message: str) -> NoReturn:
            message = without_argument_values(message)
            if parser.called_from_command_line and self.log_format({}) == "json":
                line = json_line(logging.ERROR, self.logger_name, f"{parser.prog}: {message}")
                self.stderr.write(line, style_func=lambda text: text)
                sys.exit(2)  # as argparse does
            complain(message)

        parser.error = error
        return parser

    def add_arguments(self, parser: Any) -> None:
        add_arguments(parser, self.option_spec)

    def start(self, options: OptionsT) -> int:
        raise NotImplementedError

    def handle(self, *args: Any, **command_line: Any) -> None:
        from hurricane.platform.debugging import DebuggerError, refuse_forbidden_debugger
        from hurricane.platform.startup import StartupError

        try:
            options = self.options_class.of(
                resolve_values(self.option_spec, command_line, settings)
            )
            if dry_run_requested():
                refuse_forbidden_debugger(options)  # as the start would
                self.stdout.write("\n".join(described_plan(options)))
                return
            exit_code = self.start(options)
        except (OptionError, DryRunError, StartupError, DebuggerError) as error:
            self.fail(str(error), command_line)
        if exit_code:
            sys.exit(exit_code)

    def fail(self, message: str, command_line: dict[str, Any]) -> NoReturn:
        """Stop with exit code 1 and one line on stderr: ``CommandError: ...`` as Django
        prints it, or, run from the command line with the log format json, a JSON
        object like every other line of the process."""
        if getattr(self, "_called_from_command_line", False) and (
            self.log_format(command_line) == "json"
        ):
            line = json_line(logging.ERROR, self.logger_name, message)
            self.stderr.write(line, style_func=lambda text: text)  # no colours in JSON
            sys.exit(1)
        raise CommandError(message)

    def log_format(self, command_line: dict[str, Any]) -> str:
        """The log format as far as it can be resolved (text where it cannot: the
        error may be about this very option)."""
        spec = tuple(option for option in self.option_spec if option.name == "log_format")
        try:
            log_format: str = resolve_values(spec, command_line, settings).values["log_format"]
            return log_format
        except OptionError:
            return "text"
