"""``record FILE WORD...``: append the words as one line to FILE (start-up order tests)."""

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("words", nargs="*")
        parser.add_argument("--fail", action="store_true")

    def handle(self, file, words, fail, **options):
        with open(file, "a") as out:
            out.write(" ".join(words) + "\n")
        if fail:
            raise CommandError("record was asked to fail")
