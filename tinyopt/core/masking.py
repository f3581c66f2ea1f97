"""Credentials never reach a terminal, a log or a report: `shown` masks them in any text, `install` in
every log record (the libraries' too: botocore, mlflow, requests and urllib3 put URLs, with their
user:password@, in messages and exceptions)."""

from __future__ import annotations

import logging
import os
import re
import urllib.parse

# scheme://user:password@ anywhere in a text; greedy up to the last @ before the host, as a password may hold @.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#\s\"'<>]*)@")

# Variables whose whole value is a secret (AWS's, and MLflow's login for a tracking server).
SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
# Variables that are URLs and may carry a password in their user info.
URL_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")
_SHORTEST_SECRET = 4  # a shorter value would mask pieces of ordinary words


def _masked_userinfo(match: re.Match) -> str:
    user, colon, _ = match[2].partition(":")
    return match[1] + (f"{user}:***" if colon else "***") + "@"


def known_secrets() -> list[str]:
    """The secret values in this process's environment, as they may appear in a text (also URL-decoded)."""
    found = [os.environ.get(name, "") for name in SECRET_VARIABLES]
    for name in URL_VARIABLES:
        match = _USERINFO.search(os.environ.get(name, ""))
        if match and ":" in match[2]:
            found.append(match[2].partition(":")[2])
    found += [urllib.parse.unquote(value) for value in found]
    return sorted({value for value in found if len(value) >= _SHORTEST_SECRET}, key=len, reverse=True)


def shown(text: str) -> str:
    """The text as it may be printed or recorded: user:password@ in a URL becomes user:***@, and each known
    secret value (known_secrets) becomes ***. Never raises."""
    text = _USERINFO.sub(_masked_userinfo, str(text))
    for secret in known_secrets():
        text = text.replace(secret, "***")
    return text


def without_credentials(url: str) -> str:
    """The URL with no user info at all (for a request that needs no login)."""
    return _USERINFO.sub(r"\1", url)


_plain = logging.Formatter()


def install() -> None:
    """Mask every log record from now on, once, when it is made (a filter on a logger would miss records
    that other loggers propagate; this sees every record of every logger). Idempotent."""
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "masks", False):
        return

    def masked_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            record.msg, record.args = shown(record.getMessage()), None
        except Exception:  # arguments that do not format: logging itself reports that, later
            return record
        if record.exc_info and not record.exc_text:
            record.exc_text = shown(_plain.formatException(record.exc_info))
        return record

    masked_record.masks = True
    logging.setLogRecordFactory(masked_record)
