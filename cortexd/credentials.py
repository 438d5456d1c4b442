"""Credentials kept out of what cortexd logs and shows (pure).

A private index reaches the installers as a URL with its credentials in it
(`https://user:TOKEN@pypi.example/simple`, from a project pip.conf or PIP_INDEX_URL),
and uv takes it on its command line, so the command a build log records, an
installer's own output and a notice naming a setting can all carry the token. pip
masks these itself (pip._internal.utils.misc.redact_auth_from_url); everything
cortexd writes goes through redact_credentials() the same way:

    https://user:TOKEN@host/simple   ->  https://user:****@host/simple
    https://TOKEN@host/simple        ->  https://****@host/simple   (a lone user part is a token)
    https://host/t/TOKEN/channel     ->  https://host/t/****/channel (conda's token URLs)
"""

from __future__ import annotations

import re

MASK = "****"
# scheme://netloc: the netloc runs to the first character that cannot be in one (a path, a
# query, space or a quote around the URL); its credentials end at its last '@' (as pip's split)
_URL = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<netloc>[^\s/?#'\"<>]+)")
_CONDA_TOKEN = re.compile(r"(://[^\s/'\"]+/t/)[^\s/'\"]+(?=/)")


def _redact_netloc(match: re.Match) -> str:
    netloc = match.group("netloc")
    userinfo, at, host = netloc.rpartition("@")
    if not at:
        return match.group(0)
    user, colon, _ = userinfo.partition(":")
    return f"{match.group('scheme')}{user + ':' + MASK if colon else MASK}@{host}"


def redact_credentials(text: str) -> str:
    """`text` with the credentials of every URL in it masked (pip's way); the rest as it was."""
    if "://" not in text:
        return text
    return _CONDA_TOKEN.sub(rf"\g<1>{MASK}", _URL.sub(_redact_netloc, text))
