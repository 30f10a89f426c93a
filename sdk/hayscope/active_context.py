"""The current OpenTelemetry context, read and swapped at the cost of one `ContextVar` call.

OpenTelemetry's `context.get_current`, `attach` and `detach` each pass through two Python functions
on their way to one `ContextVar`; hayscope calls them for every component execution, on the hot
path of every pipeline. With OpenTelemetry's default runtime context (contextvars) the functions
here are that `ContextVar`'s own methods; with another runtime (`OTEL_PYTHON_CONTEXT`), or an API
whose runtime is built otherwise, the API's functions. Either way they behave as the API's.
`SPAN_KEY` is where `trace.set_span_in_context` puts the current span, for a context copy that
sets it along with hayscope's own keys.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

__all__ = ["SPAN_KEY", "attach", "detach", "get_current"]


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
