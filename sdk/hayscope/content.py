"""Content capture: whether prompts, replies and other payloads may go on spans, and how they are cut.

Off by default: a span carries timings, names, models and token counts, never what a user typed
or a model answered. `configure_content_capture(enabled=True)` (or `setup_telemetry(capture_content=True)`,
or HAYSTACK_CONTENT_TRACING_ENABLED=true read by `setup_telemetry`) switches it on for the process.

When on, a value becomes text with `to_text` (any object: nested, huge, cyclic, not JSON; haystack
`Secret`s and values under secret-looking keys are replaced), then credentials are scrubbed from the
text (`scrub`: API-key and bearer-token shapes, and the resolved values of every `Secret` a traced
component holds), then the user's redaction hook sees it, then it is cut to `max_length` characters
with a marker saying it was cut. Nothing here mutates the value or raises.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import structlog
from haystack.utils import Secret

__all__ = [
    "ContentCapture",
    "Redactor",
    "configure_content_capture",
    "content_capture",
    "content_policy",
    "remember_secrets",
    "scrub",
    "to_text",
    "use_content_capture",
]

DEFAULT_MAX_LENGTH: Final = 4096
TRUNCATED_MARKER: Final = "…[truncated by hayscope]"
# Values are rendered this far past the cap before scrubbing and redaction, so that a credential
# straddling the cut is still whole (and recognised) when it is removed.
_RENDER_MARGIN: Final = 1024

# (attribute key, value) -> the value to export, or None to leave the attribute out.
Redactor = Callable[[str, str], "str | None"]

_logger = structlog.get_logger("hayscope.content")


@dataclass(frozen=True)
class ContentCapture:
    """The process's content policy; `attribute()` is the one way content reaches a span."""

    enabled: bool = False
    max_length: int = DEFAULT_MAX_LENGTH
    redact: Redactor | None = None

    def attribute(self, key: str, value: str) -> str | None:
        """`value` as it may be exported under `key`, or None when it must not be."""
        if not self.enabled:
            return None
        value = scrub(value)
        if self.redact is not None:
            try:
                redacted = self.redact(key, value)
            except Exception as error:  # a failing hook must not fail the pipeline: drop the value
                _logger.warning("content redaction hook failed; attribute left out", key=key, error=repr(error))
                return None
            if redacted is None:
                return None
            value = str(redacted)
        if len(value) > self.max_length:  # the hook may have made it longer
            value = value[: self.max_length] + TRUNCATED_MARKER
        return value


    def text(self, key: str, value: Any) -> str | None:
        """Any value as exportable text under `key` (`to_text`, then `attribute`), or None."""
        if not self.enabled:
            return None
        return self.attribute(key, to_text(value, budget=self.max_length + _RENDER_MARGIN))


_current = ContentCapture()

SECRET_PLACEHOLDER: Final = "[secret]"
# Keys whose values are credentials, whatever their type (api_key, Authorization, x-api-key, password...).
_SECRET_KEY = re.compile(r"(?i)(api[_-]?key|authori[sz]ation|password|passwd|secret|token|credential|cookie)")
# ...except counts of tokens (prompt_tokens, max_tokens, token_count): numbers, not credentials.
_TOKEN_COUNT_KEY = re.compile(r"(?i)tokens(?:_|$)|token_count")
# Credential shapes in free text: bearer tokens and the prefixes API keys are issued with.
_SECRET_TEXT = re.compile(
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|\b(?:sk|pk|rk|xox[abpr]|ghp|gho|github_pat|hf|glpat|AKIA)[-_][A-Za-z0-9_-]{12,}"
)
_MAX_DEPTH: Final = 16
_known_secrets: set[str] = set()
_known_lock = threading.Lock()
_known_pattern: re.Pattern[str] | None = None


def remember_secrets(values: Iterable[object]) -> None:
    """Adds credential values (e.g. a component's resolved `Secret`s) that `scrub` must always remove."""
    global _known_pattern
    fresh = {value for value in values if isinstance(value, str) and len(value) >= 6}
    with _known_lock:
        if fresh <= _known_secrets:
            return
        _known_secrets.update(fresh)
        ordered = sorted(_known_secrets, key=len, reverse=True)
        _known_pattern = re.compile("|".join(re.escape(value) for value in ordered))


def secrets_of(instance: object) -> list[str]:
    """The resolved values of the `Secret`s an object holds as attributes (never raises)."""
    values = []
    for value in list(getattr(instance, "__dict__", {}).values()):
        if isinstance(value, Secret):
            try:
                resolved = value.resolve_value()
            except Exception:  # an unset environment variable: nothing to remember
                continue
            if isinstance(resolved, str):
                values.append(resolved)
    return values


def scrub(text: str) -> str:
    """`text` with known secret values and credential-shaped substrings replaced by a placeholder."""
    known = _known_pattern
    if known is not None:
        text = known.sub(SECRET_PLACEHOLDER, text)
    return _SECRET_TEXT.sub(SECRET_PLACEHOLDER, text)


def to_text(value: Any, budget: int = DEFAULT_MAX_LENGTH) -> str:
    """A JSON-like rendering of any value, stopping soon after `budget` characters.

    Never raises and never mutates `value`: cycles show as "<cycle>", depth past 16 as "…",
    objects without a plain form as their type name, and `Secret`s and values under
    secret-looking keys as "[secret]".
    """
    parts: list[str] = []
    _Renderer(parts, budget).render(value, 0, set())
    return "".join(parts)


class _Renderer:
    __slots__ = ("budget", "parts", "size")

    def __init__(self, parts: list[str], budget: int) -> None:
        self.parts = parts
        self.budget = budget
        self.size = 0

    def emit(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)

    def full(self) -> bool:
        return self.size > self.budget

    def render(self, value: Any, depth: int, seen: set[int]) -> None:
        if self.full():
            return
        if value is None or isinstance(value, bool):
            self.emit("null" if value is None else str(value).lower())
        elif isinstance(value, int):
            self.emit(str(value) if value.bit_length() < 4096 else f"<int of {value.bit_length()} bits>")
        elif isinstance(value, float):
            self.emit(repr(value) if math.isfinite(value) else f'"{value}"')
        elif isinstance(value, str):
            self.string(value)
        elif isinstance(value, Secret):
            self.string(SECRET_PLACEHOLDER)
        elif isinstance(value, enum.Enum):
            self.render(value.value if isinstance(value.value, (str, int)) else value.name, depth, seen)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            self.string(f"<{type(value).__name__} of {len(value)} bytes>")
        elif depth >= _MAX_DEPTH:
            self.emit('"…"')
        elif id(value) in seen:
            self.emit('"<cycle>"')
        else:
            seen.add(id(value))
            try:
                self.container(value, depth, seen)
            except Exception:  # a property or __iter__ of someone's object failed: its type will do
                self.string(f"<{type(value).__name__}>")
            finally:
                seen.discard(id(value))

    def string(self, text: str) -> None:
        room = max(self.budget - self.size, 0) + 1
        self.emit('"' + text[:room].replace("\\", "\\\\").replace('"', '\\"') + ('"' if len(text) <= room else ""))

    def container(self, value: Any, depth: int, seen: set[int]) -> None:
        if isinstance(value, Mapping):
            self.mapping(_items(value), depth, seen)
        elif isinstance(value, (list, tuple, set, frozenset)):
            self.emit("[")
            for index, item in enumerate(value if not isinstance(value, (set, frozenset)) else sorted(value, key=repr)):
                if self.full():
                    return
                if index:
                    self.emit(", ")
                self.render(item, depth + 1, seen)
            self.emit("]")
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = [(f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value)]
            self.mapping(fields, depth, seen, type(value).__name__)
        else:
            self.string(f"<{type(value).__name__}>")

    def mapping(self, items: list[tuple[Any, Any]], depth: int, seen: set[int], kind: str = "") -> None:
        self.emit("{")
        if kind:
            self.emit(f'"__type__": "{kind}"' + (", " if items else ""))
        for index, (key, item) in enumerate(items):
            if self.full():
                return
            if index:
                self.emit(", ")
            name = key if isinstance(key, str) else repr(key)
            self.string(name)
            self.emit(": ")
            if _SECRET_KEY.search(name) and item is not None and not _token_count(name, item):
                self.string(SECRET_PLACEHOLDER)
            else:
                self.render(item, depth + 1, seen)
        self.emit("}")


def _token_count(name: str, item: Any) -> bool:
    return type(item) in (int, float) and _TOKEN_COUNT_KEY.search(name) is not None


def _items(mapping: Mapping[Any, Any]) -> list[tuple[Any, Any]]:
    try:
        return list(mapping.items())
    except Exception:  # a mapping whose iteration fails: show its type only
        return [("__type__", type(mapping).__name__)]


def content_capture() -> ContentCapture:
    """The content policy in force."""
    return _current


def content_policy(
    enabled: bool,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    redact: Redactor | None = None,
    max_length_name: str = "max_length",
) -> ContentCapture:
    """A content policy, checked: bad values raise naming the value and the fix (`max_length_name`:
    what the caller calls `max_length`)."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled={enabled!r} is not a bool: pass True to capture content, False not to.")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(
            f"{max_length_name}={max_length!r} is not a positive number of characters: e.g. {max_length_name}=4096."
        )
    if redact is not None and not callable(redact):
        raise TypeError(
            f"redact={redact!r} is not callable: pass a function (key, value) -> str | None, or None for no hook."
        )
    return ContentCapture(enabled, max_length, redact)


def use_content_capture(policy: ContentCapture) -> None:
    """Puts a policy in force for the process (`setup_telemetry` does, and restores the old one at shutdown)."""
    global _current
    _current = policy


def configure_content_capture(
    enabled: bool, *, max_length: int = DEFAULT_MAX_LENGTH, redact: Redactor | None = None
) -> ContentCapture:
    """Sets the process's content policy and returns it."""
    policy = content_policy(enabled, max_length=max_length, redact=redact)
    use_content_capture(policy)
    return policy
