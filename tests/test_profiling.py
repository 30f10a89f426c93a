"""`hayscope.profiling`: a user's pipeline from YAML or `module:factory`, and the inputs of its runs.

The pipelines are made of real haystack components (a BM25 retriever over an in-memory store, prompt
builders) and of the small components below. Factory modules are written by the tests into
`tmp_path`, which is also the current directory, and import these components from this module.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import json
import os
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from haystack import Document, Pipeline, component
from haystack.components.builders import ChatPromptBuilder, PromptBuilder
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.core.errors import DeserializationError, PipelineError
from haystack.core.pipeline.base import PipelineBase
from haystack.dataclasses import ChatMessage
from haystack.document_stores.in_memory import InMemoryDocumentStore

from hayscope import TracedAsyncPipeline
from hayscope.profiling import ProfileError, cycle_inputs, load_pipeline, read_inputs
from hayscope.testing import TelemetryCapture

PIPELINE_SPAN = "haystack.pipeline.run"
MAX_RUNS = "haystack.pipeline.max_runs_per_component"

# --------------------------------------------------------------------------------------------------
# Components and pipelines
# --------------------------------------------------------------------------------------------------


@component
class Shout:
    """Sync: its text upper-cased, as a one-item list."""

    @component.output_types(texts=list[str])
    def run(self, text: str) -> dict[str, Any]:
        return {"texts": [text.upper()]}


@component
class Apply:
    """Holds a function, so it cannot be written to YAML; counts its calls."""

    def __init__(self, function: Callable[[str], str]) -> None:
        self.function = function
        self.calls = 0

    @component.output_types(text=str)
    def run(self, text: str) -> dict[str, Any]:
        self.calls += 1
        return {"text": self.function(text)}


@component
class AsyncSuffix:
    """Has `run_async`: awaited on the loop."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix

    @component.output_types(texts=list[str])
    def run(self, text: str) -> dict[str, Any]:
        return {"texts": [text + self.suffix]}

    @component.output_types(texts=list[str])
    async def run_async(self, text: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"texts": [text + self.suffix]}


@component
class Collect:
    """A list input: connecting two senders to it makes it variadic."""

    @component.output_types(joined=str)
    def run(self, texts: list[str], separator: str = " + ") -> dict[str, Any]:
        return {"joined": separator.join(sorted(texts))}


def texts_pipeline(cls: type[PipelineBase] = Pipeline) -> PipelineBase:
    """shout -> collect <- suffix <- reverse; the flat {"text": ...} goes to both shout and reverse."""
    pipeline = cls(metadata={"owner": "profiling"}, max_runs_per_component=7, connection_type_validation=False)
    pipeline.add_component("shout", Shout())
    pipeline.add_component("reverse", Apply(lambda text: text[::-1]))
    pipeline.add_component("suffix", AsyncSuffix("!"))
    pipeline.add_component("collect", Collect())
    pipeline.connect("shout.texts", "collect.texts")
    pipeline.connect("reverse.text", "suffix.text")
    pipeline.connect("suffix.texts", "collect.texts")
    return pipeline


def rag_pipeline(store: InMemoryDocumentStore) -> Pipeline:
    pipeline = Pipeline(metadata={"owner": "profiling"})
    pipeline.add_component("retriever", InMemoryBM25Retriever(store, top_k=2))
    pipeline.add_component(
        "prompt_builder", PromptBuilder("{% for d in documents %}{{ d.content }}|{% endfor %}Q: {{ question }}")
    )
    pipeline.add_component(
        "chat_builder", ChatPromptBuilder([ChatMessage.from_user("{{ question }} ({{ documents|length }} documents)")])
    )
    pipeline.connect("retriever.documents", "prompt_builder.documents")
    pipeline.connect("retriever.documents", "chat_builder.documents")
    return pipeline


@pytest.fixture
def store() -> Iterator[InMemoryDocumentStore]:
    # A shared index of its own: the store a YAML file reloads under that index sees the same documents.
    documents = InMemoryDocumentStore(index=f"profiling-{uuid.uuid4()}")
    documents.write_documents(
        [
            Document(content="Paris is the capital of France"),
            Document(content="Berlin is the capital of Germany"),
            Document(content="Rome is the capital of Italy"),
            Document(content="France and Italy share a border"),
        ]
    )
    yield documents
    documents.delete_documents([document.id for document in documents.filter_documents()])


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs in its own directory, and sys.path is restored after it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return tmp_path


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], Path]]:
    """Writes `name.py` into tmp_path, on sys.path; forgets the imported module after the test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def write(name: str, source: str) -> Path:
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        names.append(name)
        return path

    yield write
    for name in names:
        sys.modules.pop(name, None)


def write_lines(name: str, *lines: object) -> Path:
    """A JSON Lines file: dicts are dumped, strings written as they are."""
    path = Path(name)
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def run_spans(capture: TelemetryCapture) -> list[str]:
    return [span.name for span in capture.spans() if span.name.startswith(PIPELINE_SPAN)]


def error_of(call: Callable[[], object]) -> ProfileError:
    with pytest.raises(ProfileError) as raised:
        call()
    return raised.value


# --------------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------------


async def test_a_dumped_pipeline_loads_and_runs_every_line_like_haystack(capture, store):
    original = rag_pipeline(store)
    Path("rag.yaml").write_text(original.dumps())
    lines = [
        {"retriever": {"query": "capital of France"}, "prompt_builder": {"question": "Which city?"}}
        | {"chat_builder": {"question": "Which one?"}},
        {"query": "Italy", "question": "Where?"},
        {"query": "Germany", "question": "What?", "top_k": 1},
    ]
    write_lines("inputs.jsonl", lines[0], "", lines[1], "   ", lines[2])

    pipeline = load_pipeline("rag.yaml", **capture.pipeline_kwargs)
    runs = read_inputs("inputs.jsonl", pipeline)

    assert isinstance(pipeline, TracedAsyncPipeline)
    assert pipeline.name == "rag"
    assert pipeline.metadata == {"owner": "profiling"}
    assert runs == lines
    for data in runs:
        expected = await original.run_async(copy.deepcopy(data))
        assert await pipeline.run_async(data) == expected
    assert expected["prompt_builder"] == {"prompt": "Berlin is the capital of Germany|Q: What?"}
    assert run_spans(capture) == ["haystack.pipeline.run rag"] * 3
    assert capture.sample("haystack_pipeline_runs_total", pipeline="rag", status="ok") == 3


def test_a_yaml_pipeline_takes_the_given_name_and_allowed_modules(capture):
    pipeline = Pipeline()
    pipeline.add_component("shout", Shout())
    Path("shout.yml").write_text(pipeline.dumps())

    error = error_of(lambda: load_pipeline("shout.yml"))
    cause = error.__cause__
    assert isinstance(cause, DeserializationError)
    assert str(error) == (
        f"haystack cannot load the pipeline in 'shout.yml': DeserializationError: {cause}\n"
        "To trust the modules this file names, set HAYSTACK_DESERIALIZATION_ALLOWLIST to them "
        "(comma-separated patterns such as 'mypkg.*'), or pass allowed_modules to load_pipeline."
    )
    assert "Refusing to deserialize a class from module 'test_profiling'" in str(error)

    loaded = load_pipeline("shout.yml", allowed_modules=["test_profiling"], name="shouting", **capture.pipeline_kwargs)
    assert loaded.name == "shouting"
    assert loaded.run({"text": "hey"}) == {"shout": {"texts": ["HEY"]}}
    assert run_spans(capture) == ["haystack.pipeline.run shouting"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "nothing",
            "'nothing' is no such file, and not module:factory: pass a haystack YAML file (as Pipeline.dump writes "
            "it) or module:factory, a module importable from the current directory and a function in it that takes "
            "no arguments and returns the pipeline, e.g. my_pipelines:build_rag",
        ),
        (
            "my-pipelines:build",
            "'my-pipelines:build' is no such file, and not module:factory: pass a haystack YAML file (as "
            "Pipeline.dump writes it) or module:factory, a module importable from the current directory and a "
            "function in it that takes no arguments and returns the pipeline, e.g. my_pipelines:build_rag",
        ),
        (
            "pipelines:",
            "'pipelines:' is no such file, and not module:factory: pass a haystack YAML file (as Pipeline.dump "
            "writes it) or module:factory, a module importable from the current directory and a function in it "
            "that takes no arguments and returns the pipeline, e.g. my_pipelines:build_rag",
        ),
        ("folder", "'folder' is a directory: pass the pipeline's YAML file in it"),
        (
            "empty.yaml",
            "'empty.yaml' is not a haystack pipeline: expected a mapping with 'components' and 'connections', as "
            "Pipeline.dump writes, but found nothing",
        ),
        (
            "list.yaml",
            "'list.yaml' is not a haystack pipeline: expected a mapping with 'components' and 'connections', as "
            "Pipeline.dump writes, but found a list without 'components'",
        ),
        ("no_components.yaml", "'no_components.yaml': the pipeline has no components, so there is nothing to profile"),
    ],
)
def test_yaml_spec_errors(spec, message):
    Path("folder").mkdir()
    Path("empty.yaml").write_text("")
    Path("list.yaml").write_text("- components\n- connections\n")
    Path("no_components.yaml").write_text(Pipeline().dumps())

    assert str(error_of(lambda: load_pipeline(spec))) == message


def test_a_missing_yaml_file_is_named_with_the_directory_paths_start_from():
    assert str(error_of(lambda: load_pipeline("pipelines/rag.yaml"))) == (
        f"pipeline file 'pipelines/rag.yaml' does not exist: check the path (relative to {os.getcwd()})"
    )


def test_invalid_yaml_keeps_the_parser_error_and_its_position():
    Path("bad.yaml").write_text("components: [retriever,\n")

    error = error_of(lambda: load_pipeline("bad.yaml"))

    assert isinstance(error.__cause__, yaml.YAMLError)
    assert str(error) == (
        f"'bad.yaml' is not a valid pipeline YAML file: {type(error.__cause__).__name__}: {error.__cause__}; "
        "fix it, or write it again with Pipeline.dump"
    )
    assert "line 2" in str(error)


def test_a_haystack_deserialization_error_is_wrapped_with_its_text_and_cause():
    Path("unknown.yaml").write_text(
        "components:\n  gone:\n    type: haystack.components.nowhere.Gone\n    init_parameters: {}\nconnections: []\n"
    )

    error = error_of(lambda: load_pipeline("unknown.yaml"))

    cause = error.__cause__
    assert isinstance(cause, PipelineError)
    assert str(error) == (
        "haystack cannot load the pipeline in 'unknown.yaml': PipelineError: Component "
        "'haystack.components.nowhere.Gone' (name: 'gone') not imported. Please check that the package is "
        "installed and the component path is correct. (caused by ModuleNotFoundError: No module named "
        "'haystack.components.nowhere')"
    )


# --------------------------------------------------------------------------------------------------
# Factories
# --------------------------------------------------------------------------------------------------

TRACED_FACTORIES = """
    from hayscope import TracedAsyncPipeline
    from test_profiling import Shout

    BUILT = []

    def build():
        pipeline = TracedAsyncPipeline()
        pipeline.add_component("shout", Shout())
        BUILT.append(pipeline)
        return pipeline

    def build_named():
        pipeline = TracedAsyncPipeline(name="mine")
        pipeline.add_component("shout", Shout())
        return pipeline
"""


async def test_a_factorys_traced_pipeline_is_used_as_is_with_the_given_telemetry(capture, write_module):
    write_module("traced_factories", TRACED_FACTORIES)

    pipeline = load_pipeline("traced_factories:build", **capture.pipeline_kwargs)

    assert pipeline is sys.modules["traced_factories"].BUILT[0]
    assert pipeline.name == "build"  # the default name gives way to the factory's
    assert await pipeline.run_async({"text": "hey"}) == {"shout": {"texts": ["HEY"]}}
    assert run_spans(capture) == ["haystack.pipeline.run build"]

    assert load_pipeline("traced_factories:build_named").name == "mine"
    assert load_pipeline("traced_factories:build_named", name="other").name == "other"

    error = error_of(lambda: load_pipeline("traced_factories:build", max_workers=2))
    assert str(error) == (
        "'traced_factories:build' returns a TracedAsyncPipeline, whose worker threads are set when it is built, so "
        "max_workers=2 cannot apply to it: pass max_workers=2 to TracedAsyncPipeline(...) in build(), or leave it "
        "out here"
    )


PLAIN_FACTORIES = """
    from haystack import Pipeline
    from haystack.core.pipeline.base import PipelineBase
    from test_profiling import texts_pipeline

    BUILT = []
    COMPONENTS = {}

    def build():
        pipeline = texts_pipeline(Pipeline)
        COMPONENTS.update(pipeline.graph.nodes(data="instance"))
        BUILT.append(pipeline)
        return pipeline

    def build_base():
        pipeline = texts_pipeline(PipelineBase)
        COMPONENTS.update(pipeline.graph.nodes(data="instance"))
        BUILT.append(pipeline)
        return pipeline
"""


# haystack 3 merged AsyncPipeline into Pipeline; PipelineBase, which haystack 2's AsyncPipeline extended,
# stands for every other haystack pipeline class.
@pytest.mark.parametrize("factory", ["build", "build_base"])
async def test_a_factorys_haystack_pipeline_moves_into_a_traced_one_with_the_same_components(
    capture, write_module, factory
):
    write_module("plain_factories", PLAIN_FACTORIES)
    lines = [{"text": "abc"}, {"shout": {"text": "x"}, "reverse": {"text": "yz"}, "collect": {"separator": " / "}}]
    write_lines("inputs.jsonl", *lines)

    pipeline = load_pipeline(f"plain_factories:{factory}", **capture.pipeline_kwargs)

    module = sys.modules["plain_factories"]
    assert isinstance(pipeline, TracedAsyncPipeline)
    assert pipeline.name == factory
    assert set(module.COMPONENTS) == {"shout", "reverse", "suffix", "collect"}
    for name, instance in module.COMPONENTS.items():
        assert pipeline.get_component(name) is instance
    assert list(module.BUILT[0].graph.nodes) == []  # the factory's pipeline gave its components away
    reference = texts_pipeline(Pipeline)
    assert sorted(pipeline.graph.edges(keys=True)) == sorted(reference.graph.edges(keys=True))
    assert pipeline.inputs() == reference.inputs()
    assert pipeline.metadata == {"owner": "profiling"}
    assert pipeline._connection_type_validation is False

    runs = read_inputs("inputs.jsonl", pipeline)
    results = [await pipeline.run_async(data) for data in runs]

    assert results == [await reference.run_async(data) for data in lines]
    assert results == [{"collect": {"joined": "ABC + cba!"}}, {"collect": {"joined": "X / zy!"}}]
    assert module.COMPONENTS["reverse"].calls == 2  # the moved object, holding its lambda, is what ran
    spans = capture.spans_named(f"{PIPELINE_SPAN} {factory}")
    assert [span.attributes[MAX_RUNS] for span in spans] == [7, 7]


def test_a_factory_module_in_the_current_directory_is_found_without_pythonpath(tmp_path, capture):
    Path("here_factories.py").write_text(textwrap.dedent(PLAIN_FACTORIES))
    importlib.invalidate_caches()
    sys.path[:] = [entry for entry in sys.path if entry not in ("", ".") and os.path.abspath(entry) != os.getcwd()]
    try:
        pipeline = load_pipeline("here_factories:build", **capture.pipeline_kwargs)
    finally:
        sys.modules.pop("here_factories", None)

    assert pipeline.run({"text": "ab"}) == {"collect": {"joined": "AB + ba!"}}
    assert sys.path[0] == os.getcwd()


FACTORIES = """
    from haystack import Pipeline
    from test_profiling import Shout

    NUMBER = 3
    PIPELINE = Pipeline()

    def failing():
        raise RuntimeError("no API key")

    def needs(settings):
        return Pipeline()

    def forgetful():
        pipeline = Pipeline()
        pipeline.add_component("shout", Shout())

    def gives_a_dict():
        return {"shout": Shout()}

    async def later():
        return Pipeline()

    def empty():
        return Pipeline()
"""


@pytest.mark.parametrize(
    ("spec", "message", "cause"),
    [
        (
            "factories:nope",
            "'factories:nope': module 'factories' ({file}) has no 'nope': define def nope() returning the pipeline "
            "there, or name a function that exists",
            AttributeError,
        ),
        (
            "factories:NUMBER",
            "'factories:NUMBER': 'NUMBER' in module 'factories' ({file}) is not callable but an object of type int: "
            "name a function that takes no arguments and returns the pipeline",
            None,
        ),
        (
            "factories:PIPELINE",
            "'factories:PIPELINE': 'PIPELINE' in module 'factories' ({file}) is not callable but an object of type "
            "Pipeline: wrap it in a function, def build(): ... return pipeline, and pass factories:build, so each "
            "profile gets a pipeline of its own",
            None,
        ),
        (
            "factories:failing",
            "'factories:failing': the factory failing() raised RuntimeError: no API key; it must return the pipeline "
            "when called with no arguments",
            RuntimeError,
        ),
        (
            "factories:needs",
            "'factories:needs': the factory needs() raised TypeError: needs() missing 1 required positional argument: "
            "'settings'; it must return the pipeline when called with no arguments",
            TypeError,
        ),
        (
            "factories:forgetful",
            "'factories:forgetful': the factory forgetful() returned None, not a haystack pipeline: make it return "
            "the Pipeline it builds",
            None,
        ),
        (
            "factories:gives_a_dict",
            "'factories:gives_a_dict': the factory gives_a_dict() returned an object of type dict, not a haystack "
            "pipeline: make it return the Pipeline it builds",
            None,
        ),
        (
            "factories:later",
            "'factories:later': the factory later() is async and returned a coroutine: make it a plain def that "
            "returns the pipeline",
            None,
        ),
        ("factories:empty", "'factories:empty': the pipeline has no components, so there is nothing to profile", None),
    ],
)
def test_factory_errors(write_module, spec, message, cause):
    file = write_module("factories", FACTORIES)

    error = error_of(lambda: load_pipeline(spec))

    assert str(error) == message.format(file=file)
    if cause is None:
        assert error.__cause__ is None
    else:
        assert type(error.__cause__) is cause


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "import not_installed_anywhere\n",
            "'broken:build': importing module 'broken' failed: ModuleNotFoundError: No module named "
            "'not_installed_anywhere'",
        ),
        (
            "raise RuntimeError('no config')\n",
            "'broken:build': importing module 'broken' failed: RuntimeError: no config",
        ),
        (
            "def build(:\n",
            "'broken:build': importing module 'broken' failed: SyntaxError: invalid syntax ({file}, line 1)",
        ),
    ],
)
def test_a_module_that_fails_to_import_is_reported_with_its_error(write_module, source, message):
    file = write_module("broken", source)

    error = error_of(lambda: load_pipeline("broken:build"))

    assert str(error) == message.format(file=file.name)
    assert error.__cause__ is not None


def test_a_module_not_on_the_path_says_where_to_run_from():
    error = error_of(lambda: load_pipeline("my_pipelines.rag:build"))

    assert str(error) == (
        "'my_pipelines.rag:build': no module named 'my_pipelines.rag': run from the directory that holds "
        "my_pipelines/rag.py (or the package), or add that directory to PYTHONPATH"
    )
    assert isinstance(error.__cause__, ModuleNotFoundError)


def test_unknown_keyword_arguments_are_a_type_error():
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) tracer: it takes allowed_modules and"):
        load_pipeline("anything.yaml", tracer=object())


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def test_both_forms_are_read_as_written_skipping_blank_lines(store):
    lines = [
        {"query": "France", "question": "Which?"},
        {"retriever": {"query": "Italy", "top_k": 1}, "prompt_builder": {"question": "q"}}
        | {"chat_builder": {"question": "q", "template_variables": {"x": 1}}},
        # Only objects and no component names, but every key an input: haystack reads it flat.
        {"query": {"text": "a"}, "question": {"text": "b"}},
    ]
    Path("inputs.jsonl").write_text(
        "\ufeff" + json.dumps(lines[0]) + "\r\n\r\n" + json.dumps(lines[1]) + "\n \n" + json.dumps(lines[2])
    )

    assert read_inputs("inputs.jsonl", rag_pipeline(store)) == lines
    assert read_inputs(Path("inputs.jsonl"), rag_pipeline(store)) == lines


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            ["", '{"query": "x", "question": oops}'],
            "inputs.jsonl:2: not valid JSON (Expecting value at column 28): write each run's data as one JSON "
            "object on a single line",
        ),
        (
            [[1, 2]],
            'inputs.jsonl:1: expected a JSON object, the data of one run, but found an array: write {"component": '
            '{"input": value}} or {"input": value}',
        ),
        (
            ['"Which city?"'],
            'inputs.jsonl:1: expected a JSON object, the data of one run, but found a string: write {"component": '
            '{"input": value}} or {"input": value}',
        ),
        (
            [{"query": "x", "question": "q"}, {"retreiver": {"query": "x"}}],
            "inputs.jsonl:2: unknown component 'retreiver'; the components taking inputs are: chat_builder, "
            "prompt_builder, retriever",
        ),
        (
            [{"retriever": {"query": "x", "topk": 2}}],
            "inputs.jsonl:1: input 'topk' of component 'retriever' does not exist; its open inputs are: filters, "
            "query, scale_score, top_k",
        ),
        (
            [{"prompt_builder": {"question": "q", "documents": []}}],
            "inputs.jsonl:1: input 'documents' of component 'prompt_builder' is connected to retriever, which "
            "gives it its value; its open inputs are: question, template, template_variables",
        ),
        (
            [{"query": "x", "question": "q", "topk": 2}],
            "inputs.jsonl:1: no component takes an input named 'topk'; the inputs the pipeline takes are: filters, "
            "query, question, scale_score, template, template_variables, top_k",
        ),
        (
            [{"retriever": {"query": "x"}, "question": "q"}],
            "inputs.jsonl:1: 'retriever' is a component, but the line is in the flat form because not every value "
            'is an object: write every key as a component, {"component": {"input": value}}, or every key as an '
            'input, {"input": value}',
        ),
        (
            [{"query": "x"}],
            "inputs.jsonl:1: missing input 'question' of component 'prompt_builder', which is mandatory and not "
            'connected: add "question": value to the line (this line has: query)',
        ),
        (
            [{"filters": {"field": "content", "operator": "==", "value": "x"}}],
            "inputs.jsonl:1: missing input 'query' of component 'retriever', which is mandatory and not "
            'connected: add "query": value to the line (this line has: filters)',
        ),
        (
            [{"retriever": {"query": "x"}, "prompt_builder": {"question": "q"}}],
            "inputs.jsonl:1: missing input 'question' of component 'chat_builder', which is mandatory and not "
            'connected: add "question": value under "chat_builder" to the line (this line has: retriever.query, '
            "prompt_builder.question)",
        ),
        (
            [{}],
            "inputs.jsonl:1: missing input 'query' of component 'retriever', which is mandatory and not connected: "
            'add "query": value under "retriever" to the line (this line has: no keys)',
        ),
        (
            ["", "  ", ""],
            "inputs file 'inputs.jsonl' has no runs: it holds no data lines (blank lines are skipped); write one "
            "JSON object per line",
        ),
    ],
)
def test_input_errors_name_the_line_and_what_the_pipeline_takes(store, lines, message):
    write_lines("inputs.jsonl", *lines)

    assert str(error_of(lambda: read_inputs("inputs.jsonl", rag_pipeline(store)))) == message


def test_a_component_whose_inputs_are_all_connected_takes_none_from_the_run():
    write_lines("inputs.jsonl", {"text": "a"}, {"suffix": {"text": "b"}})

    assert str(error_of(lambda: read_inputs("inputs.jsonl", texts_pipeline()))) == (
        "inputs.jsonl:2: component 'suffix' takes no inputs from the run: all its inputs are connected to other "
        "components; the components taking inputs are: collect, reverse, shout"
    )


def test_invalid_json_keeps_the_json_error():
    write_lines("inputs.jsonl", '{"text": "a",}')

    error = error_of(lambda: read_inputs("inputs.jsonl", texts_pipeline()))

    assert isinstance(error.__cause__, json.JSONDecodeError)
    assert str(error).startswith("inputs.jsonl:1: not valid JSON (Expecting property name enclosed in double quotes")


def test_a_missing_or_unreadable_inputs_file():
    assert str(error_of(lambda: read_inputs("nope.jsonl", texts_pipeline()))) == (
        "inputs file 'nope.jsonl' does not exist: pass a JSON Lines file with the data of one run per line, "
        'e.g. {"query": "What is haystack?"}'
    )
    Path("folder.jsonl").mkdir()
    error = error_of(lambda: read_inputs("folder.jsonl", texts_pipeline()))
    assert str(error) == f"cannot read inputs file 'folder.jsonl': {error.__cause__}"
    assert isinstance(error.__cause__, IsADirectoryError)


def test_runs_are_taken_from_the_lines_in_turn_each_a_copy_of_its_own():
    lines = [{"text": "a", "tags": ["x"]}, {"text": "b"}]

    runs = cycle_inputs(lines, 5)

    assert runs == [lines[0], lines[1], lines[0], lines[1], lines[0]]
    assert runs[0] is not lines[0] and runs[0]["tags"] is not lines[0]["tags"]
    assert runs[0] is not runs[2]
    assert cycle_inputs(lines, 1) == [lines[0]]


@pytest.mark.parametrize("runs", [0, -1, 2.5, True, "3"])
def test_runs_must_be_one_or_more(runs):
    assert str(error_of(lambda: cycle_inputs([{"text": "a"}], runs))) == (
        f"runs={runs!r}: the number of runs must be a whole number, 1 or more"
    )


def test_runs_need_inputs():
    assert str(error_of(lambda: cycle_inputs([], 3))) == (
        "no inputs to take the runs from: read_inputs() a file with at least one line"
    )
