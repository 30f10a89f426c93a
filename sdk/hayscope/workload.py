"""Runs a pipeline over a list of inputs at a given concurrency, the way a service would.

Each run consumes `run_async_generator`, so partial outputs arrive as components finish (the
notebook's way of running an async pipeline); a failing run is counted and the others go on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from haystack import Pipeline
from tqdm import tqdm

# (run index, component name, that component's outputs)
PartialHandler = Callable[[int, str, Mapping[str, Any]], None]

MAX_ERRORS_KEPT = 5


@dataclass
class WorkloadResult:
    """What a workload did: outcomes, wall time, and the merged outputs of each run (None if it failed)."""

    outputs: list[dict[str, Any] | None]
    wall_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # the first few, as "run N: Type: message"
    failed: int = 0
    cancelled: int = 0

    @property
    def runs(self) -> int:
        return len(self.outputs)

    @property
    def succeeded(self) -> int:
        return self.runs - self.failed - self.cancelled


class Workload:
    """Runs `pipeline` once per input, at most `concurrency` at a time; `result` fills in as runs end.

    When the caller is cancelled (Ctrl-C under `asyncio.run`) every run is cancelled and `result`
    still holds what finished: the runs that did not are counted as cancelled.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        inputs: Sequence[dict[str, Any]],
        concurrency: int,
        *,
        on_partial: PartialHandler | None = None,
        progress: bool = True,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency={concurrency!r} is not a positive whole number: use 1 or more.")
        self.pipeline = pipeline
        self.inputs = list(inputs)
        self.concurrency = concurrency
        self.on_partial = on_partial
        self.progress = progress
        self.result = WorkloadResult(outputs=[None] * len(self.inputs))

    async def run(self) -> WorkloadResult:
        result = self.result = WorkloadResult(outputs=[None] * len(self.inputs))
        slots = asyncio.Semaphore(self.concurrency)
        finished = [False] * len(self.inputs)
        bar = tqdm(total=len(self.inputs), unit="run", disable=not self.progress or None, leave=False)
        every_component = set(self.pipeline.graph.nodes)

        async def one(index: int, data: dict[str, Any]) -> None:
            async with slots:
                merged: dict[str, Any] = {}
                try:
                    # Every component's outputs, each as it finishes; the last item repeats them all.
                    stream = self.pipeline.run_async_generator(data, include_outputs_from=every_component)
                    async for partial in stream:
                        if all(merged.get(name) is outputs for name, outputs in partial.items()):
                            continue  # the final result: nothing new
                        for component_name, outputs in partial.items():
                            merged[component_name] = outputs
                            if self.on_partial is not None:
                                self.on_partial(index, component_name, outputs)
                except Exception as error:
                    result.failed += 1
                    if len(result.errors) < MAX_ERRORS_KEPT:
                        cause = error.__cause__ or error
                        result.errors.append(f"run {index}: {type(cause).__name__}: {cause}")
                else:
                    result.outputs[index] = merged
                # Not reached when the run is cancelled: unfinished runs are the cancelled ones.
                finished[index] = True
                bar.update(1)

        started = time.perf_counter()
        try:
            await asyncio.gather(*(one(index, data) for index, data in enumerate(self.inputs)))
        finally:
            result.wall_seconds = time.perf_counter() - started
            result.cancelled = finished.count(False)
            bar.close()
        return result


def summarize(outputs: Mapping[str, Any], width: int = 100) -> str:
    """One component's outputs in one line: texts shortened, vectors and lists as their sizes."""
    parts = []
    for name, value in outputs.items():
        parts.append(f"{name}={_short(value, width)}")
    return ", ".join(parts)


def _short(value: Any, width: int) -> str:
    text = getattr(value, "text", None)  # ChatMessage, and anything else with a text
    if isinstance(text, str):
        value = text
    if isinstance(value, str):
        value = " ".join(value.split())
        return repr(value if len(value) <= width else value[: width - 1] + "…")
    if isinstance(value, list):
        if value and all(isinstance(item, float) for item in value[:8]):
            return f"vector[{len(value)}]"
        if len(value) == 1:
            return f"[{_short(value[0], width)}]"
        return f"{len(value)} items"
    if isinstance(value, Mapping):
        return f"{{{len(value)} keys}}"
    return _short(repr(value), width) if not isinstance(value, (int, float, bool, type(None))) else repr(value)
