"""`TracedAsyncPipeline`: a haystack `Pipeline` whose every run and component execution is traced and measured.

It delegates everything to haystack. It overrides only the entry points (`run`, `run_async_generator`,
which `run_async` and `stream` go through) to open the run's span, and the two methods haystack calls
to execute one component (`_run_component_async`, `_run_component`) to open the component's span,
and the two that mark the moment it decides to run one (`_consume_component_inputs`,
`_run_component_in_isolation`), the start of the component's schedule wait.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any, Self

from haystack import Pipeline, tracing
from haystack.core.component import Component
from haystack.core.errors import PipelineValidationError
from haystack.core.pipeline.breakpoint import SnapshotCallback
from haystack.core.serialization_security import mark_deserialization_internal
from haystack.dataclasses.breakpoints import Breakpoint, PipelineSnapshot
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from hayscope import active_context, gc_pauses, semconv
from hayscope._version import __version__
from hayscope.executor import ExecutorState, OwnPool, executor_state
from hayscope.haystack_bridge import ensure_bridge
from hayscope.metrics import register_metrics
from hayscope.offload import offloaded
from hayscope.recording import RUN_KEY, PipelineRun, PipelineTelemetry, current_run
from hayscope.timing import timed_on_loop, timed_on_thread

__all__ = ["TracedAsyncPipeline"]

DEFAULT_PIPELINE_NAME = "pipeline"

# Attributes a copy shares with its original and a pickle leaves out: where telemetry goes.
_SHARED_WITH_COPIES = ("_tracer_provider", "_registry", "_executor", "_own_pool")

INSTRUMENTATION_SCOPE = "hayscope"


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise TypeError(
            f"name={name!r} is not a usable pipeline name: pass a short non-empty string such as "
            "name='rag'; it labels this pipeline's spans and metrics."
        )
    return name


def _check_component(name: object, instance: object) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(
            f"component name {name!r} is not a non-empty string: pass a name such as 'retriever', "
            "which labels the component's spans and metrics."
        )
    if isinstance(instance, type):
        raise PipelineValidationError(
            f"component {name!r}: {instance.__name__} is a class, not an instance: pass {instance.__name__}(...) instead."
        )
    if isinstance(instance, Component):
        return
    raise PipelineValidationError(
        f"component {name!r}: {instance!r} (a {type(instance).__name__}) is not a haystack component: "
        "pass an instance of a class decorated with @haystack.component."
    )


def _check_executor(executor: object, max_workers: object) -> None:
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(
            f"executor={executor!r} is not a concurrent.futures.Executor: pass a ThreadPoolExecutor, "
            "or max_workers=N for a pool of N threads, or neither for the loop's default executor."
        )
    if isinstance(executor, ProcessPoolExecutor):
        raise TypeError(
            f"executor={executor!r} runs work in other processes, where a pipeline's component "
            "instances cannot go: pass a ThreadPoolExecutor, or max_workers=N for a pool of N threads."
        )
    if max_workers is not None and (
        isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
    ):
        raise ValueError(f"max_workers={max_workers!r} must be a whole number of threads, 1 or more.")
    if executor is not None and max_workers is not None:
        raise ValueError("pass executor= or max_workers=, not both: max_workers sizes a pool hayscope makes.")


class TracedAsyncPipeline(Pipeline):
    """A drop-in `haystack.Pipeline` that records a span and metric samples per run and per component execution.

    :param metadata: as for `haystack.Pipeline`.
    :param max_runs_per_component: as for `haystack.Pipeline`.
    :param connection_type_validation: as for `haystack.Pipeline`.
    :param name: this pipeline's label in spans and metrics (the `pipeline` label); keep it bounded.
    :param tracer_provider: where spans go; default: OpenTelemetry's global provider.
    :param registry: where metrics go; default: prometheus_client's global `REGISTRY`.
    :param executor: where sync components run on the async paths; default: the running loop's
        default executor, the one haystack uses.
    :param max_workers: instead of `executor`, a pool of this many threads for this pipeline.
    """

    def __init__(
        self,
        metadata: dict[str, Any] | None = None,
        max_runs_per_component: int = 100,
        connection_type_validation: bool = True,
        *,
        name: str = DEFAULT_PIPELINE_NAME,
        tracer_provider: trace.TracerProvider | None = None,
        registry: CollectorRegistry | None = None,
        executor: Executor | None = None,
        max_workers: int | None = None,
    ) -> None:
        if isinstance(metadata, str):  # TracedAsyncPipeline("rag"): haystack's first argument is metadata
            raise TypeError(
                f"metadata={metadata!r} is not a dict: to name the pipeline pass name={metadata!r} "
                "(haystack.Pipeline's first positional argument is its metadata)."
            )
        super().__init__(
            metadata=metadata,
            max_runs_per_component=max_runs_per_component,
            connection_type_validation=connection_type_validation,
        )
        self._name = _check_name(name)
        self._tracer_provider: trace.TracerProvider | None = None
        self._registry: CollectorRegistry | None = None
        self._telemetry: PipelineTelemetry | None = None
        self._executor: Executor | None = None
        self._max_workers: int | None = None
        self._own_pool: OwnPool | None = None
        if executor is not None or max_workers is not None:
            self._use_executor(executor, max_workers)
        self.configure_telemetry(tracer_provider=tracer_provider, registry=registry)

    def _use_executor(self, executor: Executor | None, max_workers: int | None) -> None:
        _check_executor(executor, max_workers)
        self._executor = executor
        self._max_workers = max_workers
        self._own_pool = None if max_workers is None else OwnPool(max_workers)

    def __copy__(self) -> Self:
        copied = type(self).__new__(type(self))
        copied.__dict__.update(self.__dict__)
        return copied

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        # What telemetry goes to (provider, registry, executor) is shared, not copied: a copy reports
        # to the same places; the telemetry built from them is the copy's own, made on first use.
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        for key, value in self.__dict__.items():
            if key == "_telemetry":
                value = None
            elif key not in _SHARED_WITH_COPIES:
                value = copy.deepcopy(value, memo)
            copied.__dict__[key] = value
        return copied

    def __getstate__(self) -> dict[str, Any]:
        # Providers, registries and executors hold locks and threads: a pickled pipeline carries its
        # components, name and max_workers, and once unpickled reports to the global provider and
        # registry until `configure_telemetry()` says otherwise.
        state = self.__dict__.copy()
        state["_telemetry"] = None
        state.update(dict.fromkeys(_SHARED_WITH_COPIES))
        return state

    def add_component(self, name: str, instance: Component) -> Self:
        """As `haystack.Pipeline.add_component`, with errors that say what was passed and what to pass."""
        _check_component(name, instance)
        return super().add_component(name, instance)

    def add_components(self, components: dict[str, Component]) -> Self:
        """As `haystack.Pipeline.add_components`, with errors that say what was passed and what to pass."""
        if not isinstance(components, dict):
            raise TypeError(f"components={components!r} is not a dict: pass {{'name': MyComponent(), ...}}.")
        for name, instance in components.items():
            _check_component(name, instance)
        return super().add_components(components)

    @property
    def name(self) -> str:
        """The `pipeline` label of this pipeline's spans and metrics."""
        return self._name

    def configure_telemetry(
        self,
        *,
        name: str | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        registry: CollectorRegistry | None = None,
        executor: Executor | None = None,
        max_workers: int | None = None,
    ) -> TracedAsyncPipeline:
        """Set the name, tracer provider, registry or executor after construction, e.g. on a pipeline
        from `loads()` (which keeps none of them).

        Arguments left out keep their current value; `executor` or `max_workers` replaces the other.
        Returns the pipeline, for chaining: `TracedAsyncPipeline.loads(yaml).configure_telemetry(name="rag")`.
        """
        if tracer_provider is not None and not isinstance(tracer_provider, trace.TracerProvider):
            raise TypeError(
                f"tracer_provider={tracer_provider!r} is not an opentelemetry TracerProvider: pass "
                "opentelemetry.sdk.trace.TracerProvider(...) or leave it out to use the global one."
            )
        if registry is not None and not isinstance(registry, CollectorRegistry):
            raise TypeError(
                f"registry={registry!r} is not a prometheus_client.CollectorRegistry: pass "
                "prometheus_client.CollectorRegistry() or leave it out to use the global REGISTRY."
            )
        new_name = None if name is None else _check_name(name)
        if executor is not None or max_workers is not None:
            self._use_executor(executor, max_workers)  # (checked before anything changes)
        if new_name is not None:
            self._name = new_name
        if tracer_provider is not None:
            self._tracer_provider = tracer_provider
        if registry is not None:
            self._registry = registry
        self._telemetry = None
        return self

    def _get_telemetry(self) -> PipelineTelemetry:
        telemetry = self._telemetry
        provider = self._tracer_provider or trace.get_tracer_provider()
        if telemetry is None or telemetry.tracer_provider is not provider:
            # Built on first use, not in __init__, so that a provider or registry set up after the
            # pipeline was built (or loaded from YAML) is the one used; and again when another
            # provider became global (after a shutdown and a new setup_telemetry()).
            tracer = trace.get_tracer(INSTRUMENTATION_SCOPE, __version__, tracer_provider=provider)
            telemetry = self._telemetry = PipelineTelemetry(
                self._name, tracer, register_metrics(self._registry), self._make_executor_state, provider
            )
            gc_pauses.install()  # so that a collection's pause is not blamed on a component
        ensure_bridge()
        return telemetry

    def _make_executor_state(self) -> ExecutorState | None:
        if self._max_workers is None:
            return executor_state(self._executor, name=self._name)
        own_pool = getattr(self, "_own_pool", None)
        if own_pool is None:  # unpickled: a pool of its own, in this process
            own_pool = self._own_pool = OwnPool(self._max_workers)
        return own_pool.state(self._name)

    def _consume_component_inputs(
        self, component_name: str, component: dict[str, Any], inputs: Any, is_resume: bool = False
    ) -> dict[str, Any]:
        # haystack takes a component's inputs the moment it decides to run it: on the async paths, the
        # start of its schedule wait (a greedy-variadic component's began earlier, see below). Every
        # execution passes here; current_run() is inlined.
        run: PipelineRun | None = active_context.get_current().get(RUN_KEY)
        if run is not None:
            scheduled = run.scheduled
            if scheduled is not None and component_name not in scheduled:
                scheduled[component_name] = time.perf_counter()
        return super()._consume_component_inputs(component_name, component, inputs, is_resume=is_resume)

    async def _run_component_in_isolation(  # type: ignore[override]
        self, *, component_name: str, **kwargs: Any
    ) -> AsyncIterator[dict[str, Any]]:
        # A greedy-variadic component runs alone: haystack first waits for every running task. That
        # wait is its schedule wait, from the moment haystack chose it.
        run = current_run()
        if run is not None:
            run.scheduled_now(component_name)
        async for partial in super()._run_component_in_isolation(component_name=component_name, **kwargs):
            yield partial

    def _run_attributes(self, execution_mode: str) -> dict[str, Any]:
        return {
            semconv.PIPELINE_NAME: self._name,
            semconv.PIPELINE_EXECUTION_MODE: execution_mode,
            semconv.PIPELINE_MAX_RUNS_PER_COMPONENT: self._max_runs_per_component,
        }

    @mark_deserialization_internal
    def run(
        self,
        data: dict[str, Any],
        include_outputs_from: set[str] | None = None,
        *,
        break_point: Breakpoint | None = None,
        pipeline_snapshot: PipelineSnapshot | None = None,
        snapshot_callback: SnapshotCallback | None = None,
    ) -> dict[str, Any]:
        """Runs the pipeline synchronously, exactly as `haystack.Pipeline.run`, inside a pipeline span."""
        # (No schedule waits: on this path haystack runs each component as soon as it picks it.)
        run = self._get_telemetry().start_run(self._run_attributes("sync"), data, schedule_waits=False)
        token = active_context.attach(run.context)
        try:
            result = super().run(
                data,
                include_outputs_from,
                break_point=break_point,
                pipeline_snapshot=pipeline_snapshot,
                snapshot_callback=snapshot_callback,
            )
        except BaseException as error:
            run.finish(error)
            raise
        finally:
            active_context.detach(token)
        run.finish(outputs=result)
        return result

    @mark_deserialization_internal
    async def run_async_generator(  # type: ignore[override]
        self, data: dict[str, Any], include_outputs_from: set[str] | None = None, concurrency_limit: int = 4
    ) -> AsyncIterator[dict[str, Any]]:
        """Runs the pipeline as `haystack.Pipeline.run_async_generator`, yielding the same partial outputs.

        The run's context is attached only while haystack works on the next output and detached
        before each `yield`, so nothing of this run stays current in the consumer, and nothing is
        detached in a foreign context when an abandoned generator is finalized elsewhere.
        """
        attributes = self._run_attributes("async")
        attributes[semconv.PIPELINE_CONCURRENCY_LIMIT] = concurrency_limit
        run = self._get_telemetry().start_run(attributes, data)
        steps = super().run_async_generator(
            data, include_outputs_from=include_outputs_from, concurrency_limit=concurrency_limit
        )
        error: BaseException | None = None
        try:
            while True:
                token = active_context.attach(run.context)
                try:
                    output = await steps.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    active_context.detach(token)
                yield output
        except BaseException as raised:
            error = raised
            raise
        finally:
            # Closing haystack's generator cancels its in-flight component tasks; their spans end
            # (as cancelled) before the run's own span does.
            token = active_context.attach(run.context)
            try:
                await steps.aclose()
            finally:
                active_context.detach(token)
                run.finish(error)

    @staticmethod
    async def _run_component_async(
        component_name: str,
        component: dict[str, Any],
        component_inputs: dict[str, Any],
        component_visits: dict[str, int],
        parent_span: tracing.Span | None = None,
        *,
        break_point: Breakpoint | None = None,
    ) -> Mapping[str, Any]:
        # (Every execution goes through here: current_run() and other small helpers are inlined.)
        run: PipelineRun | None = active_context.get_current().get(RUN_KEY)
        instance = component["instance"]
        if run is None or (break_point is not None and _breaks_here(break_point, component_name, component_visits)):
            # Outside a traced run, or haystack is about to stop at a breakpoint: no execution to record.
            return await Pipeline._run_component_async(
                component_name, component, component_inputs, component_visits, parent_span, break_point=break_point
            )
        # The very test haystack's _execute_component_async makes to choose between awaiting and a thread:
        if callable(getattr(instance, "run_async", None)):
            # Every step of its `run_async` is timed on the loop.
            execution = run.start_component(component_name, instance, semconv.MODE_ASYNC, component_inputs)
            executing: Any = timed_on_loop(
                Pipeline._run_component_async(
                    component_name, component, component_inputs, component_visits, parent_span, break_point=break_point
                ),
                execution,
            )
        else:
            # haystack's bookkeeping on the loop as always; `run` in a worker of the pipeline's executor.
            # The steps on the loop are timed too: haystack's work for the component there (copying
            # large inputs) can block the loop, and is then this component's to answer for.
            execution = run.start_component(component_name, instance, semconv.MODE_THREAD, component_inputs)
            executing = timed_on_loop(
                Pipeline._run_component_async(
                    component_name,
                    offloaded(component, execution, run.telemetry.executor),
                    component_inputs,
                    component_visits,
                    parent_span,
                    break_point=break_point,
                ),
                execution,
            )
        # (Awaited here rather than in a coroutine of its own: one frame less on every step.)
        token = active_context.attach(execution.context)
        try:
            outputs = await executing
        except BaseException as error:
            execution.finish(None, error)
            raise
        finally:
            active_context.detach(token)
        execution.finish(component_visits[component_name], outputs=outputs)
        return outputs

    @staticmethod
    def _run_component(
        component_name: str,
        component: dict[str, Any],
        inputs: dict[str, Any],
        component_visits: dict[str, int],
        parent_span: tracing.Span | None = None,
        *,
        break_point: Breakpoint | None = None,
    ) -> Mapping[str, Any]:
        run = current_run()
        if run is None or _breaks_here(break_point, component_name, component_visits):
            # Outside a traced run, or haystack is about to stop at a breakpoint: no execution to record.
            return Pipeline._run_component(
                component_name, component, inputs, component_visits, parent_span, break_point=break_point
            )
        execution = run.start_component(component_name, component["instance"], semconv.MODE_SYNC, inputs)
        execution.thread = threading.current_thread()
        token = active_context.attach(execution.context)
        try:
            outputs = timed_on_thread(
                execution,
                Pipeline._run_component,
                component_name,
                component,
                inputs,
                component_visits,
                parent_span,
                break_point=break_point,
            )
        except BaseException as error:
            execution.finish(None, error)
            raise
        finally:
            active_context.detach(token)
        execution.finish(component_visits[component_name], outputs=outputs)
        return outputs


def _breaks_here(break_point: Breakpoint | None, component_name: str, component_visits: dict[str, int]) -> bool:
    """haystack's own test for a breakpoint that stops the run before this component executes."""
    return (
        isinstance(break_point, Breakpoint)
        and break_point.component_name == component_name
        and break_point.visit_count == component_visits[component_name]
    )
