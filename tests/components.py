"""Small real haystack components the tests build pipelines from."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import structlog
from haystack import component
from opentelemetry import trace


@component
class AsyncAdd:
    """Adds `amount`; has `run_async`, so the pipeline awaits it on the loop."""

    def __init__(self, amount: int = 1, delay: float = 0.0) -> None:
        self.amount = amount
        self.delay = delay

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        return {"value": value + self.amount}

    @component.output_types(value=int)
    async def run_async(self, value: int) -> dict[str, Any]:
        if self.delay:
            await asyncio.sleep(self.delay)
        return {"value": value + self.amount}


@component
class SyncAdd:
    """Adds `amount`; sync only, so `run_async` offloads it to a worker thread."""

    def __init__(self, amount: int = 1) -> None:
        self.amount = amount

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        return {"value": value + self.amount}


@component
class Gate:
    """Async component that waits until the test opens its event: lets a test hold a run mid-flight."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        raise NotImplementedError("Gate only runs async")

    @component.output_types(value=int)
    async def run_async(self, value: int) -> dict[str, Any]:
        self.entered.set()
        await self.release.wait()
        return {"value": value}


@component
class ThreadGate:
    """Sync component that blocks its worker thread until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        self.entered.set()
        self.release.wait(timeout=30)
        return {"value": value}


@component
class SyncFail:
    """Raises ValueError(message); sync only."""

    def __init__(self, message: str = "boom") -> None:
        self.message = message

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        raise ValueError(self.message)


@component
class AsyncFail(SyncFail):
    """Raises ValueError(message) from `run_async`."""

    @component.output_types(value=int)
    async def run_async(self, value: int) -> dict[str, Any]:
        raise ValueError(self.message)


@component
class SyncTraced:
    """Opens a child span and logs through structlog from inside the component."""

    def __init__(self, tracer_provider: trace.TracerProvider) -> None:
        self.tracer = tracer_provider.get_tracer("tests")

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        with self.tracer.start_as_current_span("inner work"):
            structlog.get_logger().info("inside component", value=value)
        return {"value": value}


@component
class AsyncTraced(SyncTraced):
    """The same, from `run_async`."""

    @component.output_types(value=int)
    async def run_async(self, value: int) -> dict[str, Any]:
        return self.run(value)


@component
class Sleep:
    """Sleeps (blocking) for `seconds`; used to make durations measurable."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        time.sleep(self.seconds)
        return {"value": value}
