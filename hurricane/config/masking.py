"""What Hurricane shows of a secret in its logs: ``*****``.

A value is a secret when the name of its option or variable says so (see
SECRET_WORDS), or when the image's entrypoint read it from a ``<NAME>_FILE`` (it
lists those names in ``HURRICANE_FROM_FILES``). In any other value, a URL shows
as its origin (scheme, host and port) only: Slack, Discord and Teams webhooks carry
their credential in the path, others in the user part or the query
(``https://hooks.example/*****``). The entrypoint masks its summary line by the same
rule with a copy of its own, for it cannot import Hurricane
(tests/test_security_defaults.py holds both copies to the same cases).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

# A name says its value is a secret when it contains one of these (DJANGO_SECRET_KEY,
# DB_PASSWD, SMTP_CREDENTIALS) ...
SECRET_WORDS = ("PASSWORD", "PASSWD", "SECRET", "TOKEN", "KEY", "CREDENTIAL")
# ... or has one of these as a word of its own: too short to look for inside other
# words (AMQP_PASS and DB_PWD are secrets, BYPASS_CACHE is not).
SECRET_NAME_WORDS = ("PASS", "PWD")
MASK = "*****"
# Written by the entrypoint: the variables it set from <NAME>_FILE, comma-separated.
FROM_FILES_VARIABLE = "HURRICANE_FROM_FILES"


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(word in upper for word in SECRET_WORDS) or any(
        word in SECRET_NAME_WORDS for word in re.split(r"[^A-Z0-9]+", upper)
    )


def variables_from_files(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The variables the entrypoint set from ``<NAME>_FILE``."""
    environ = os.environ if environ is None else environ
    return frozenset(name for name in environ.get(FROM_FILES_VARIABLE, "").split(",") if name)


def is_secret(name: str, from_files: Iterable[str] | None = None) -> bool:
    """Whether the value of the option or variable ``name`` must not be shown."""
    from_files = variables_from_files() if from_files is None else from_files
    return is_secret_name(name) or name in from_files


# A URL: scheme, authority (maybe with user:password@), then what follows (path,
# query, fragment) up to a blank or a quote.
URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<authority>[^/?#\s'\"<>]*)(?P<rest>[^\s'\"<>]*)"
)


def url_origin(url: str) -> str:
    """``url`` reduced to its scheme, host and port (``https://hooks.example:8443``):
    what a log may show of where something goes."""
    match = URL.match(url.strip())
    if not match:
        return MASK
    return match["scheme"] + match["authority"].rpartition("@")[2]


def shown_origin(name: str, url: str) -> str:
    """Where ``url`` (the value of ``name``) goes, as a log line may name it: its
    origin, or the mask when the value itself is a secret (read from a file)."""
    return MASK if is_secret(name) else url_origin(url)


def masked_urls(text: str) -> str:
    """``text`` with every URL in it reduced to its origin, followed by ``/*****``
    where more was hidden (a path, a query, a user part)."""

    def mask(url: re.Match) -> str:
        origin = url_origin(url[0])
        if "@" in url["authority"] or url["rest"] not in ("", "/"):
            return origin + "/" + MASK
        return url[0]

    return URL.sub(mask, text)


def shown_value(name: str, value: Any, from_files: Iterable[str] | None = None) -> Any:
    """``value`` as a log may show it: the mask for a secret that is set, else itself
    with every URL in it reduced to its origin."""
    if value not in (None, "") and is_secret(name, from_files):
        return MASK
    if isinstance(value, str):
        return masked_urls(value)
    if isinstance(value, (list, tuple)):
        return type(value)(shown_value(name, item, from_files) for item in value)
    return value


def redacted(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` masked, and each word of them (split at
    blanks, commas and semicolons), also where a ``repr`` or JSON escaped it, as a
    parser's or a command's complaint may quote a value."""
    words = {word for secret in secrets for word in [secret, *re.split(r"[\s,;]+", secret)]}
    forms = {
        form for word in words if word for form in (word, repr(word)[1:-1], json.dumps(word)[1:-1])
    }
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    return text


def mentions(text: str, value: str) -> bool:
    """Whether ``text`` repeats ``value`` or a word of it (see :func:`redacted`)."""
    return redacted(text, [value]) != text
