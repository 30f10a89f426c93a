"""The current OpenTelemetry context, read and swapped at the cost of one `ContextVar` call.

OpenTelemetry's `context.get_current`, `attach` and `detach` each pass through two Python functions
on their way to one `ContextVar`, and `trace.set_span_in_context` through two more to copy a
`Context`; hayscope does each of these several times per component execution, on the hot path of
every pipeline. With OpenTelemetry's default runtime context (contextvars) the functions here are
that `ContextVar`'s own methods. With another runtime (`OTEL_PYTHON_CONTEXT`), or an API whose
runtime is built otherwise, they are the API's functions. Either way they behave as the API's.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

__all__ = ["SPAN_KEY", "attach", "detach", "get_current", "with_values"]


def _runtime_variable() -> ContextVar[Context] | None:
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    if type(runtime) is ContextVarsRuntimeContext and isinstance(variable, ContextVar):
        return variable
    return None


def _span_key() -> str:
    """The key under which `trace.set_span_in_context` stores the current span."""
    (key,) = trace.set_span_in_context(trace.INVALID_SPAN, Context()).keys()
    return key


SPAN_KEY = _span_key()

_VARIABLE = _runtime_variable()
get_current: Callable[[], Context]
attach: Callable[[Context], Token[Context]]
detach: Callable[[Token[Context]], None]

if _VARIABLE is None:
    get_current, attach, detach = otel_context.get_current, otel_context.attach, otel_context.detach
else:
    get_current, attach = _VARIABLE.get, _VARIABLE.set
    _reset = _VARIABLE.reset

    def detach(token: Token[Context]) -> None:  # type: ignore[no-redef]
        try:
            _reset(token)
        except Exception:  # a token of another context: the API's detach fails the same way and logs it
            otel_context.detach(token)


def with_values(context: Context, values: dict[str, Any]) -> Context:
    """`context` with `values` added (`set_value` for several keys, in one copy)."""
    return Context({**context, **values})
