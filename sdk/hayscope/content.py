"""Content capture: whether prompts, replies and other payloads may go on spans, and how they are cut.

Off by default: a span carries timings, names, models and token counts, never what a user typed
or a model answered. `configure_content_capture(enabled=True)` (or `setup_telemetry(capture_content=True)`,
or HAYSTACK_CONTENT_TRACING_ENABLED=true read by `setup_telemetry`) switches it on for the process.
When on, every value passes the user's redaction hook first and is then cut to `max_length`
characters with a marker saying how long it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import structlog

__all__ = ["ContentCapture", "Redactor", "configure_content_capture", "content_capture"]

DEFAULT_MAX_LENGTH: Final = 4096
TRUNCATED_MARKER: Final = "…[truncated by hayscope: {length} characters in all]"

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
        if self.redact is not None:
            try:
                redacted = self.redact(key, value)
            except Exception as error:  # a failing hook must not fail the pipeline: drop the value
                _logger.warning("content redaction hook failed; attribute left out", key=key, error=repr(error))
                return None
            if redacted is None:
                return None
            value = str(redacted)
        if len(value) > self.max_length:
            value = value[: self.max_length] + TRUNCATED_MARKER.format(length=len(value))
        return value


_current = ContentCapture()


def content_capture() -> ContentCapture:
    """The content policy in force."""
    return _current


def configure_content_capture(
    enabled: bool, *, max_length: int = DEFAULT_MAX_LENGTH, redact: Redactor | None = None
) -> ContentCapture:
    """Sets the process's content policy and returns it."""
    global _current
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled={enabled!r} is not a bool: pass True to capture content, False not to.")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length={max_length!r} is not a positive number of characters: e.g. max_length=4096.")
    if redact is not None and not callable(redact):
        raise TypeError(
            f"redact={redact!r} is not callable: pass a function (key, value) -> str | None, or None for no hook."
        )
    _current = ContentCapture(enabled, max_length, redact)
    return _current
