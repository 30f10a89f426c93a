"""Load a user's own pipeline and the inputs of its runs, for `hayscope profile`.

`load_pipeline` takes a haystack YAML file (as `Pipeline.dump` writes it) or `module:factory`, and
always returns a `TracedAsyncPipeline`. `read_inputs` reads a JSON Lines file, one run's `data` per
line, and checks every line against the pipeline's inputs before anything runs, so a typo fails
with its line number instead of in the middle of a profile. `cycle_inputs` turns the lines into the
requested number of runs.

Every problem a user can fix raises `ProfileError`, whose message names the culprit and the fix.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from haystack.core.errors import DeserializationError
from haystack.core.pipeline.base import PipelineBase
from haystack.marshal import YamlMarshaller

from hayscope.pipeline import DEFAULT_PIPELINE_NAME, TracedAsyncPipeline

__all__ = ["ProfileError", "cycle_inputs", "load_pipeline", "read_inputs"]

YAML_SUFFIXES = (".yaml", ".yml")
TELEMETRY_ARGUMENTS = frozenset({"name", "tracer_provider", "registry", "executor", "max_workers"})
# What `configure_telemetry` can still change on a pipeline that already exists.
CONFIGURABLE_ARGUMENTS = frozenset({"name", "tracer_provider", "registry"})
SPEC_HELP = (
    "pass a haystack YAML file (as Pipeline.dump writes it) or module:factory, a module importable from "
    "the current directory and a function in it that takes no arguments and returns the pipeline, "
    "e.g. my_pipelines:build_rag"
)


class ProfileError(ValueError):
    """A pipeline spec or an inputs file that cannot be used; the message says which and how to fix it."""


def load_pipeline(spec: str, *, allowed_modules: Sequence[str] | None = None, **telemetry: Any) -> TracedAsyncPipeline:
    """The pipeline `spec` names, as a `TracedAsyncPipeline`.

    :param spec: a haystack YAML file, or `module:factory`: a module importable from the current
        directory or `sys.path`, and a callable in it that takes no arguments and returns a pipeline.
        The current directory is put on `sys.path` if it is not there (as `python -m` does), for the
        factory's module and for the modules of the components a YAML file names.
    :param allowed_modules: modules (patterns such as `"mypkg.*"`) a YAML file may load components
        from, besides haystack's own; haystack's `HAYSTACK_DESERIALIZATION_ALLOWLIST` works too.
    :param telemetry: `TracedAsyncPipeline` keyword arguments: name, tracer_provider, registry,
        executor, max_workers. `None` values count as left out. The name defaults to the YAML file's
        stem or the factory's name.

    A factory may return:

    - a `TracedAsyncPipeline`: used as is. A given name, tracer_provider or registry is applied with
      `configure_telemetry`; without a name it keeps its own, unless that is the default one, which
      the factory's name replaces. Its executor is fixed once built, so executor or max_workers
      given here raise `ProfileError`.
    - any other haystack pipeline (`Pipeline`, or another `PipelineBase` such as haystack 2's
      `AsyncPipeline`): its components and connections move into a new `TracedAsyncPipeline` with
      the same metadata, max_runs_per_component and connection_type_validation. Nothing is
      serialized: the traced pipeline holds the very component objects the factory built (so
      components that cannot be serialized work), and the factory's pipeline is left empty.
      Methods a subclass of `Pipeline` overrides do not carry over.

    :raises ProfileError: the file or module is missing or unusable, the factory fails or returns no
        pipeline, or the pipeline has no components.
    :raises TypeError: an argument that is not one of the above, or an invalid value of one.
    """
    unknown = sorted(set(telemetry) - TELEMETRY_ARGUMENTS)
    if unknown:
        raise TypeError(
            f"load_pipeline() got unexpected keyword argument(s) {', '.join(unknown)}: it takes "
            f"allowed_modules and TracedAsyncPipeline's {', '.join(sorted(TELEMETRY_ARGUMENTS))}"
        )
    settings = {key: value for key, value in telemetry.items() if value is not None}
    spec = os.fspath(spec)
    _put_cwd_on_path()
    path = Path(spec)
    if path.is_dir():
        raise ProfileError(f"{spec!r} is a directory: pass the pipeline's YAML file in it")
    if path.is_file():
        pipeline = _from_yaml(spec, path, allowed_modules, settings)
    elif path.suffix.lower() in YAML_SUFFIXES:
        raise ProfileError(f"pipeline file {spec!r} does not exist: check the path (relative to {os.getcwd()})")
    else:
        pipeline = _from_factory(spec, settings)
    if not pipeline.graph.nodes:
        raise ProfileError(f"{spec!r}: the pipeline has no components, so there is nothing to profile")
    return pipeline


def read_inputs(path: str | Path, pipeline: PipelineBase) -> list[dict[str, Any]]:
    """The `data` of each run, one per line of the JSON Lines file at `path`, checked against `pipeline`.

    Each line is a JSON object in one of haystack's two forms: `{"component": {"input": value}}`,
    or the flat `{"input": value}` that haystack gives to every component with that open input. The
    form is told apart as haystack does. Blank lines are skipped; line numbers in errors count them.

    Checked: every component takes inputs, every input is an open (unconnected) input of its
    component, every flat key is some component's open input, and every mandatory input that nothing
    is connected to is given. Values are not type-checked: haystack does that when the run starts.

    :returns: the parsed lines, as written (haystack resolves the flat form itself at run time).
    :raises ProfileError: the file is missing or unreadable, a line is invalid, or it has no runs.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # -sig: a BOM from a Windows editor is no error
    except FileNotFoundError as error:
        raise ProfileError(
            f"inputs file {str(path)!r} does not exist: pass a JSON Lines file with the data of one run "
            'per line, e.g. {"query": "What is haystack?"}'
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise ProfileError(f"cannot read inputs file {str(path)!r}: {error}") from error
    open_inputs = pipeline.inputs()
    runs: list[dict[str, Any]] = []
    # Split on "\n" only: str.splitlines would also split at U+2028, which JSON allows inside strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise ProfileError(
                f"{where}: not valid JSON ({error.msg} at column {error.colno}): write each run's data as "
                "one JSON object on a single line"
            ) from error
        if not isinstance(data, dict):
            raise ProfileError(
                f"{where}: expected a JSON object, the data of one run, but found {_json_kind(data)}: write "
                '{"component": {"input": value}} or {"input": value}'
            )
        _check_line(where, data, pipeline, open_inputs)
        runs.append(data)
    if not runs:
        raise ProfileError(
            f"inputs file {str(path)!r} has no runs: it holds no data lines (blank lines are skipped); write "
            "one JSON object per line"
        )
    return runs


def cycle_inputs(inputs: Sequence[Mapping[str, Any]], runs: int) -> list[dict[str, Any]]:
    """`runs` run data taken from `inputs` in turn, starting over at the end: 5 runs of [a, b] are a b a b a.

    Each run gets its own deep copy, so what one run does to its data never reaches another.
    """
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ProfileError(f"runs={runs!r}: the number of runs must be a whole number, 1 or more")
    if not inputs:
        raise ProfileError("no inputs to take the runs from: read_inputs() a file with at least one line")
    return [copy.deepcopy(dict(inputs[index % len(inputs)])) for index in range(runs)]


# -- loading --------------------------------------------------------------------------------------


def _put_cwd_on_path() -> None:
    # An installed console script has its own directory on sys.path, not the one it runs from.
    cwd = os.getcwd()
    if not any(entry in ("", ".") or os.path.abspath(entry) == cwd for entry in sys.path):
        sys.path.insert(0, cwd)


def _from_yaml(
    spec: str, path: Path, allowed_modules: Sequence[str] | None, settings: dict[str, Any]
) -> TracedAsyncPipeline:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ProfileError(f"cannot read pipeline file {spec!r}: {error}") from error
    # Parsed here rather than by Pipeline.loads, whose error for bad YAML hides where the problem is.
    try:
        data = YamlMarshaller().unmarshal(text)
    except Exception as error:
        raise ProfileError(
            f"{spec!r} is not a valid pipeline YAML file: {_describe(error)}; fix it, or write it again with "
            "Pipeline.dump"
        ) from error
    if not isinstance(data, dict) or "components" not in data:
        found = "nothing" if data is None else f"{_yaml_kind(data)} without 'components'"
        raise ProfileError(
            f"{spec!r} is not a haystack pipeline: expected a mapping with 'components' and 'connections', "
            f"as Pipeline.dump writes, but found {found}"
        )
    try:
        loaded = PipelineBase.from_dict(data, allowed_modules=list(allowed_modules) if allowed_modules else None)
    except Exception as error:
        message = f"haystack cannot load the pipeline in {spec!r}: {_describe(error)}"
        if isinstance(error, DeserializationError) and "allowlist" in str(error):
            message += (
                "\nTo trust the modules this file names, set HAYSTACK_DESERIALIZATION_ALLOWLIST to them "
                "(comma-separated patterns such as 'mypkg.*'), or pass allowed_modules to load_pipeline."
            )
        raise ProfileError(message) from error
    return _adopt(loaded, {"name": path.stem, **settings})


def _from_factory(spec: str, settings: dict[str, Any]) -> TracedAsyncPipeline:
    module_name, _, factory_name = spec.partition(":")
    if not (all(part.isidentifier() for part in module_name.split(".")) and factory_name.isidentifier()):
        raise ProfileError(f"{spec!r} is no such file, and not module:factory: {SPEC_HELP}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and (module_name + ".").startswith(error.name + "."):
            raise ProfileError(
                f"{spec!r}: no module named {module_name!r}: run from the directory that holds "
                f"{module_name.replace('.', '/')}.py (or the package), or add that directory to PYTHONPATH"
            ) from error
        raise ProfileError(f"{spec!r}: importing module {module_name!r} failed: {_describe(error)}") from error
    except Exception as error:
        raise ProfileError(f"{spec!r}: importing module {module_name!r} failed: {_describe(error)}") from error
    where = f"module {module_name!r} ({getattr(module, '__file__', None) or 'no file'})"
    try:
        factory = getattr(module, factory_name)
    except AttributeError as error:
        raise ProfileError(
            f"{spec!r}: {where} has no {factory_name!r}: define def {factory_name}() returning the pipeline "
            "there, or name a function that exists"
        ) from error
    if not callable(factory):
        hint = (
            f"wrap it in a function, def build(): ... return pipeline, and pass {module_name}:build, so each "
            "profile gets a pipeline of its own"
            if isinstance(factory, PipelineBase)
            else "name a function that takes no arguments and returns the pipeline"
        )
        raise ProfileError(
            f"{spec!r}: {factory_name!r} in {where} is not callable but an object of type "
            f"{type(factory).__qualname__}: {hint}"
        )
    try:
        pipeline = factory()
    except Exception as error:
        raise ProfileError(
            f"{spec!r}: the factory {factory_name}() raised {_describe(error)}; it must return the pipeline "
            "when called with no arguments"
        ) from error
    if inspect.iscoroutine(pipeline):
        pipeline.close()  # never awaited: closing it spares a "never awaited" warning
        raise ProfileError(
            f"{spec!r}: the factory {factory_name}() is async and returned a coroutine: make it a plain def "
            "that returns the pipeline"
        )
    if not isinstance(pipeline, PipelineBase):
        returned = "None" if pipeline is None else f"an object of type {type(pipeline).__qualname__}"
        raise ProfileError(
            f"{spec!r}: the factory {factory_name}() returned {returned}, not a haystack pipeline: make it "
            "return the Pipeline it builds"
        )
    if isinstance(pipeline, TracedAsyncPipeline):
        return _configure(spec, factory_name, pipeline, settings)
    return _adopt(pipeline, {"name": factory_name, **settings})


def _configure(
    spec: str, factory_name: str, pipeline: TracedAsyncPipeline, settings: dict[str, Any]
) -> TracedAsyncPipeline:
    fixed = sorted(set(settings) - CONFIGURABLE_ARGUMENTS)
    if fixed:
        given = ", ".join(f"{key}={settings[key]!r}" for key in fixed)
        raise ProfileError(
            f"{spec!r} returns a TracedAsyncPipeline, whose worker threads are set when it is built, so "
            f"{given} cannot apply to it: pass {given} to TracedAsyncPipeline(...) in {factory_name}(), or "
            "leave it out here"
        )
    if "name" not in settings and pipeline.name == DEFAULT_PIPELINE_NAME:
        settings = {**settings, "name": factory_name}
    return pipeline.configure_telemetry(**settings)


def _adopt(source: PipelineBase, settings: dict[str, Any]) -> TracedAsyncPipeline:
    """A new TracedAsyncPipeline holding `source`'s component objects and connections; `source` is left empty."""
    traced = TracedAsyncPipeline(
        metadata=source.metadata,
        # haystack keeps these two constructor settings only as private attributes.
        max_runs_per_component=getattr(source, "_max_runs_per_component", 100),
        connection_type_validation=getattr(source, "_connection_type_validation", True),
        **settings,
    )
    components = dict(source.graph.nodes(data="instance"))
    connections = [
        (f"{sender}.{edge['from_socket'].name}", f"{receiver}.{edge['to_socket'].name}")
        for sender, receiver, edge in source.graph.edges(data=True)
    ]
    # A component belongs to one pipeline at a time: removing it frees it and resets its sockets,
    # and connecting again in the new pipeline rebuilds what connecting had set (e.g. variadic sockets).
    for name in components:
        source.remove_component(name)
    for name, instance in components.items():
        traced.add_component(name, instance)
    for sender, receiver in connections:
        traced.connect(sender, receiver)
    return traced


def _describe(error: BaseException) -> str:
    """The error's type and text, and its cause's when the text leaves it out (haystack often wraps)."""
    text = f"{type(error).__name__}: {error}"
    cause = error.__cause__
    if cause is not None and str(cause) not in str(error):
        text += f" (caused by {type(cause).__name__}: {cause})"
    return text


def _yaml_kind(value: object) -> str:
    return {list: "a list", str: "a string"}.get(type(value), f"a {type(value).__name__}")


# -- checking a line ------------------------------------------------------------------------------


def _check_line(
    where: str, data: dict[str, Any], pipeline: PipelineBase, open_inputs: dict[str, dict[str, Any]]
) -> None:
    nested = _is_component_form(data, pipeline)
    if nested:
        given = {name: set(inputs) for name, inputs in data.items()}
        for name, inputs in data.items():
            _check_component(where, name, inputs, pipeline, open_inputs)
        keys = [f"{name}.{input_name}" for name, inputs in data.items() for input_name in inputs]
    else:
        accepted = {input_name for inputs in open_inputs.values() for input_name in inputs}
        for key in data:
            if key in accepted:
                continue
            if key in pipeline.graph.nodes:
                raise ProfileError(
                    f"{where}: {key!r} is a component, but the line is in the flat form because not every value "
                    'is an object: write every key as a component, {"component": {"input": value}}, or every '
                    'key as an input, {"input": value}'
                )
            raise ProfileError(
                f"{where}: no component takes an input named {key!r}; the inputs the pipeline takes are: "
                f"{_names(accepted)}"
            )
        # haystack gives a flat value to every component having that open input.
        given = {name: set(inputs) & set(data) for name, inputs in open_inputs.items()}
        keys = list(data)
    for name, inputs in open_inputs.items():
        for input_name, description in inputs.items():
            if description["is_mandatory"] and input_name not in given.get(name, ()):
                fix = f'"{input_name}": value under "{name}"' if nested else f'"{input_name}": value'
                raise ProfileError(
                    f"{where}: missing input {input_name!r} of component {name!r}, which is mandatory and not "
                    f"connected: add {fix} to the line (this line has: {', '.join(keys) or 'no keys'})"
                )


def _is_component_form(data: dict[str, Any], pipeline: PipelineBase) -> bool:
    """Whether haystack reads `data` as {"component": {"input": value}} (its `_prepare_component_input_data`)."""
    if not all(isinstance(value, dict) for value in data.values()):
        return False
    if data and not any(name in pipeline.graph.nodes for name in data):
        # Only objects, but no component names: flat if every key is the name of some input.
        sockets = pipeline.inputs(include_components_with_connected_inputs=True)
        return not data.keys() <= {input_name for inputs in sockets.values() for input_name in inputs}
    return True


def _check_component(
    where: str, name: str, inputs: dict[str, Any], pipeline: PipelineBase, open_inputs: dict[str, dict[str, Any]]
) -> None:
    taking = _names(open_inputs)
    if name not in pipeline.graph.nodes:
        raise ProfileError(f"{where}: unknown component {name!r}; the components taking inputs are: {taking}")
    if name not in open_inputs:
        raise ProfileError(
            f"{where}: component {name!r} takes no inputs from the run: all its inputs are connected to other "
            f"components; the components taking inputs are: {taking}"
        )
    sockets = pipeline.graph.nodes[name]["input_sockets"]
    for input_name in inputs:
        if input_name in open_inputs[name]:
            continue
        socket = sockets.get(input_name)
        reason = (
            f"is connected to {_names(socket.senders)}, which gives it its value"
            if socket is not None
            else "does not exist"
        )
        raise ProfileError(
            f"{where}: input {input_name!r} of component {name!r} {reason}; its open inputs are: "
            f"{_names(open_inputs[name])}"
        )


def _names(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {list: "an array", str: "a string"}.get(type(value), type(value).__name__)
