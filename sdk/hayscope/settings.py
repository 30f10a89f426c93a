"""Configuration values: an explicit argument beats an environment variable, which beats the default.

Every value is checked here, at setup time; a bad one raises `ValueError` naming where it came from,
the value, and what would work.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Final, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

# Standard OpenTelemetry variables (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/)
OTEL_SERVICE_NAME: Final = "OTEL_SERVICE_NAME"
OTEL_TRACES_EXPORTER: Final = "OTEL_TRACES_EXPORTER"  # otlp (default) | console | none
OTEL_EXPORTER_OTLP_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
OTEL_EXPORTER_OTLP_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_PROTOCOL"
OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
OTEL_EXPORTER_OTLP_HEADERS: Final = "OTEL_EXPORTER_OTLP_HEADERS"
OTEL_EXPORTER_OTLP_TRACES_HEADERS: Final = "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
# Seconds, as opentelemetry-python's exporters read them (the specification says milliseconds).
OTEL_EXPORTER_OTLP_TIMEOUT: Final = "OTEL_EXPORTER_OTLP_TIMEOUT"
OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: Final = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
OTEL_TRACES_SAMPLER: Final = "OTEL_TRACES_SAMPLER"  # default parentbased_always_on
OTEL_TRACES_SAMPLER_ARG: Final = "OTEL_TRACES_SAMPLER_ARG"
# haystack's own switch for content on spans, which its users already know (read at setup, not import)
HAYSTACK_CONTENT_TRACING_ENABLED: Final = "HAYSTACK_CONTENT_TRACING_ENABLED"
# hayscope's own
HAYSCOPE_METRICS_PORT: Final = "HAYSCOPE_METRICS_PORT"  # default 9464; 0 picks a free port
HAYSCOPE_METRICS_HOST: Final = "HAYSCOPE_METRICS_HOST"  # default 127.0.0.1

DEFAULT_SERVICE_NAME: Final = "haystack"
DEFAULT_METRICS_PORT: Final = 9464
DEFAULT_METRICS_HOST: Final = "127.0.0.1"
EXPORTERS: Final = ("otlp", "console", "none")
PROTOCOLS: Final = ("grpc", "http/protobuf")
DEFAULT_ENDPOINTS: Final = {"grpc": "http://localhost:4317", "http/protobuf": "http://localhost:4318/v1/traces"}
SAMPLERS: Final = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)

T = TypeVar("T")


def pick(argument: T | None, *env_names: str) -> tuple[T | str | None, str]:
    """The value to use and where it came from ('argument', a variable's name, or 'default')."""
    if argument is not None:
        return argument, "argument"
    for name in env_names:
        value = os.environ.get(name, "").strip()
        if value:
            return value, name
    return None, "default"


def _where(source: str, argument_name: str) -> str:
    return f"{argument_name}=" if source == "argument" else f"{source}="


def choice(value: object, source: str, argument_name: str, allowed: tuple[str, ...]) -> str:
    text = value.strip().lower() if isinstance(value, str) else value
    if text not in allowed:
        raise ValueError(f"{_where(source, argument_name)}{value!r} is not supported: use one of {', '.join(allowed)}.")
    return str(text)


# A host name, an IPv4 address or an IPv6 one (urlsplit drops the brackets), with no space or stray character
_HOST = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+(%[A-Za-z0-9]+)?")


def choices(value: object, source: str, argument_name: str, allowed: tuple[str, ...], alone: str = "") -> list[str]:
    """A comma-separated list of choices (as `OTEL_TRACES_EXPORTER` may be), each once, in order;
    `alone` is a choice that cannot stand beside others (`none`)."""
    if not isinstance(value, str):
        return [choice(value, source, argument_name, allowed)]
    picked: list[str] = []
    for item in value.split(","):
        try:
            text = choice(item, source, argument_name, allowed)
        except ValueError:
            raise ValueError(
                f"{_where(source, argument_name)}{value!r} is not supported: use one of {', '.join(allowed)}, "
                "or several separated by commas."
            ) from None
        if text not in picked:
            picked.append(text)
    if alone in picked and len(picked) > 1:
        raise ValueError(
            f"{_where(source, argument_name)}{value!r} names {alone!r} beside others: give {alone!r} alone, or leave it out."
        )
    return picked


def endpoint(value: object, source: str, argument_name: str) -> str:
    """The URL, its scheme in lower case (schemes are case-insensitive; the exporters compare them as text)."""
    parts = urlsplit(value.strip()) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not _HOST.fullmatch(parts.hostname or ""):
        raise ValueError(
            f"{_where(source, argument_name)}{value!r} is not an OTLP endpoint: give a URL with scheme and host, "
            "e.g. http://localhost:4317 for gRPC or http://localhost:4318 for http/protobuf."
        )
    try:
        parts.port  # noqa: B018 (raises on a malformed port)
    except ValueError:
        raise ValueError(
            f"{_where(source, argument_name)}{value!r} has a malformed port: use a number from 1 to 65535, "
            "e.g. http://localhost:4317."
        ) from None
    return urlunsplit(parts)


def headers(value: object, source: str, argument_name: str) -> dict[str, str]:
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and k.strip() and isinstance(v, str) for k, v in value.items()):
            # gRPC refuses upper-case metadata keys; HTTP header names are case-insensitive anyway.
            return {k.strip().lower(): v for k, v in value.items()}
    elif isinstance(value, str):
        parsed: dict[str, str] = {}
        for pair in value.split(","):
            key, sep, val = pair.partition("=")
            if not sep or not key.strip():
                break
            parsed[unquote(key.strip()).lower()] = unquote(val.strip())
        else:
            return parsed
    raise ValueError(
        f"{_where(source, argument_name)}{value!r} are not OTLP headers: pass a dict of strings, or in the "
        "variable a comma-separated list such as 'api-key=secret,tenant=acme'."
    )


def _number_argument(value: object, source: str, argument_name: str, example: str) -> None:
    """Variables are text; an argument must be a number already (a string there is a mistake)."""
    if source == "argument" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"{argument_name}={value!r} is not a number: pass one, e.g. {argument_name}={example}.")


def ratio(value: object, source: str, argument_name: str) -> float:
    _number_argument(value, source, argument_name, "0.1")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not 0.0 <= number <= 1.0:
        raise ValueError(
            f"{_where(source, argument_name)}{value!r} is not a sampling ratio: give a number from 0 to 1, "
            "e.g. 0.1 to keep one trace in ten."
        )
    return number


def seconds(value: object, source: str, argument_name: str) -> float:
    _number_argument(value, source, argument_name, "10")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not 0.0 < number < float("inf"):
        raise ValueError(
            f"{_where(source, argument_name)}{value!r} is not a timeout: give a positive number of seconds, e.g. 10."
        )
    return number


def port(value: object, source: str, argument_name: str) -> int:
    _number_argument(value, source, argument_name, "9464")
    try:
        number = int(value) if not isinstance(value, (bool, float)) else -1  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = -1
    if not 0 <= number <= 65535:
        raise ValueError(
            f"{_where(source, argument_name)}{value!r} is not a TCP port: give a number from 1 to 65535, "
            "or 0 to pick a free one."
        )
    return number


# The SDK's BatchSpanProcessor variables: it would log and fall back on a bad one; hayscope refuses it.
BSP_VARIABLES: Final = {
    "OTEL_BSP_MAX_QUEUE_SIZE": 2048,
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": 512,
    "OTEL_BSP_SCHEDULE_DELAY": 5000,
    "OTEL_BSP_EXPORT_TIMEOUT": 30000,
}


def check_batch_variables() -> None:
    values = {}
    for name, default in BSP_VARIABLES.items():
        value = os.environ.get(name, "").strip()
        if value and not (value.isdigit() and int(value) > 0):
            raise ValueError(f"{name}={value!r} is not a positive whole number: e.g. {default} (the default).")
        values[name] = int(value) if value else default
    if values["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] > values["OTEL_BSP_MAX_QUEUE_SIZE"]:
        settings = ", ".join(
            f"{name}={os.environ.get(name)!r}" for name in ("OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
        )
        raise ValueError(
            f"the span batching settings are not usable ({settings}): the export batch size must be at most "
            "the queue size (defaults 512 and 2048)."
        )


TRUE_WORDS: Final = ("true", "1", "yes", "on")
FALSE_WORDS: Final = ("false", "0", "no", "off")


def boolean(value: object, source: str, argument_name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError(
        f"{_where(source, argument_name)}{value!r} is not a switch: use true or false (also 1/0, yes/no, on/off)."
    )


def text(value: object, source: str, argument_name: str, example: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{_where(source, argument_name)}{value!r} must be a non-empty string, e.g. {example!r}.")
    return value.strip()
