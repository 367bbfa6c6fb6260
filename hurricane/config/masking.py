"""What Hurricane shows of a secret in its logs: ``*****``.

A value is a secret when the name of its option or variable says so (see
SECRET_WORDS), or when the image's entrypoint read it from a ``<NAME>_FILE`` (it
lists those names in ``HURRICANE_FROM_FILES``). In any other value, a URL shows
its origin (scheme, host and port) and, of its path, only the words every receiver
uses (PUBLIC_PATH_WORDS); every other segment, the user part, the query and the
fragment show as the mask: Slack, Discord and Teams webhooks carry their
credential in the path, others in the user part or the query
(``https://hooks.slack.com/services/*****/*****/*****``). The entrypoint masks its
summary line by the same rule with a copy of its own, for it cannot import
Hurricane (tests/test_security_defaults.py holds both copies to the same cases).
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


# Path segments a URL may show: words of receivers' public URL schemes (Slack's
# /services/, Discord's /api/webhooks/, Teams' /webhookb2/.../IncomingWebhook/, the
# /webhook of most others), never a value of one user's. Compared case-blind.
PUBLIC_PATH_WORDS = frozenset(
    {
        "api",
        "callback",
        "callbacks",
        "event",
        "events",
        "hook",
        "hooks",
        "incomingwebhook",
        "notifications",
        "notify",
        "services",
        "v1",
        "v2",
        "webhook",
        "webhookb2",
        "webhooks",
    }
)


def public_url(url: str) -> str:
    """``url`` as a log may show it: its scheme, host and port (a user part masked),
    then its path with each segment that is not one of PUBLIC_PATH_WORDS masked, then
    the mask for a query or a fragment
    (``https://hooks.slack.com/services/*****/*****/*****``)."""
    match = URL.match(url.strip())
    if not match:
        return MASK
    _user, at, host = match["authority"].rpartition("@")
    rest = match["rest"]
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    path, after = rest[:cut], rest[cut:]
    segments = [
        segment if segment == "" or segment.lower() in PUBLIC_PATH_WORDS else MASK
        for segment in path.split("/")
    ]
    return (
        match["scheme"]
        + (MASK + at if at else "")
        + host
        + "/".join(segments)
        + (after[:1] + MASK if after else "")
    )


def shown_url(name: str, url: str) -> str:
    """Where ``url`` (the value of ``name``) goes, as a log line may name it (see
    :func:`public_url`), or the mask when the value itself is a secret (read from a
    file)."""
    return MASK if is_secret(name) else public_url(url)


def masked_urls(text: str) -> str:
    """``text`` with every URL in it as :func:`public_url` shows it."""
    return URL.sub(lambda url: public_url(url[0]), text)


def shown_value(name: str, value: Any, from_files: Iterable[str] | None = None) -> Any:
    """``value`` as a log may show it: the mask for a secret that is set, else itself
    with every URL in it as :func:`public_url` shows it."""
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
