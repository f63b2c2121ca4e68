"""Removing secrets from what Sentinel shows: health, logs, error reasons.

Two mechanisms, because secrets reach text two ways:

* URLs. Deploy hooks carry their token in the query string (GitLab pipeline triggers:
  `…/trigger/pipeline?token=…`), proxies in `user:password@`, some callbacks in the
  fragment. `redact_url` keeps what identifies a backend (scheme, host, port, path) and
  replaces the rest; `redact_text` does it for every URL inside a message (aiohttp quotes
  the URL it failed on).
* Known secrets. A secret in a URL's path (Slack's incoming webhooks) or a token a
  server echoes back cannot be recognised by its shape, so the config loader hands every
  secret it holds to `remember_secrets`, and `redact_text` replaces each occurrence.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

REDACTED = "<redacted>"
# Shorter values are not remembered: replacing "pass" in every log line would mangle
# words without protecting much.
MIN_SECRET_LENGTH = 6

# A URL with a scheme, or a scheme-less one (`hooks.example.com/x?token=…`) with a
# `key=value` query.
_URL_IN_TEXT = re.compile(
    r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s'"`]+"""
    r"""|[^\s'"`?=]*[./][^\s'"`?]*\?[^\s'"`]*=[^\s'"`]*"""
)
_known: list[str] = []  # longest first: a secret may contain another


def redact_url(url: str) -> str:
    """`https://u:p@host/hook?token=x#y` -> `https://host/hook?<redacted>#<redacted>`."""
    base, hash_mark, fragment = url.partition("#")
    base, question_mark, query = base.partition("?")
    scheme, sep, rest = base.partition("://")
    if not sep:
        scheme, rest = "", base
    authority, slash, path = rest.partition("/")
    authority = authority.rpartition("@")[2]  # the last @ ends the userinfo
    out = f"{scheme}{sep}{authority}{slash}{path}"
    if question_mark:
        out += "?" + (REDACTED if query else "")
    if hash_mark:
        out += "#" + (REDACTED if fragment else "")
    return out


def redact_text(text: str) -> str:
    """Redact every URL inside free text and every remembered secret. Idempotent."""
    for secret in _known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if "?" not in text and "@" not in text and "#" not in text:
        return text  # the common case, without the regex
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)


def remember_secrets(values: Iterable[str]) -> None:
    """Have `redact_text` replace these wherever they appear (and, for a URL, its path)."""
    fresh = set(_known)
    for value in values:
        candidates = [value]
        if "://" in value:
            with contextlib.suppress(ValueError):  # an unparsable URL: the value alone
                candidates.append(urlsplit(value).path)
        fresh.update(c for c in candidates if len(c) >= MIN_SECRET_LENGTH)
    _known[:] = sorted(fresh, key=len, reverse=True)
