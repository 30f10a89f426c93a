"""CPU instructions per component execution, counted by valgrind: overhead figures that noise cannot move.

    python benchmarks/instructions.py [--runs K] [--workload NAME ...] [--parts] [--json PATH]

Timings on a shared 2-core machine move by +-10 us per component from run to run; the number of
instructions a variant executes hardly does: with `PYTHONHASHSEED`, uuid4 and `random` fixed in the
counted process, repeated counts agree within 0.2%. Each variant of bench_overhead.py runs in a
process of its own under callgrind with instrumentation off; after 100 warm-up runs it is switched
on (`callgrind_control -i on`) for K sequential runs and off again, and the spans queued meanwhile
are flushed inside that window, so exporting them counts too. Every thread is counted: for
`chain8-sync`, the workers'. The cyclic garbage collector is off inside the window (a full
collection landing in it or not would move a count by 10% and more): gc_pressure.py measures what
each variant leaves for it.

`--parts` counts, instead, hayscope on `chain8-async` with one part left out at a time (the
patches of profile_hayscope.py, and a no-op tracer provider for the spans): what each part costs.

Instructions are work, not time: a cache miss costs more than an instruction, and the same code
runs at different speeds on different machines. Read these figures next to bench_overhead.py's,
as the part of the overhead ratio that does not depend on the machine or its load.

Needs valgrind (`apt-get install valgrind`). About a minute per variant and workload.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any


def _same_randomness_every_time() -> None:
    """In the counted process, before OpenTelemetry makes its context keys (`create_key` adds a
    uuid4): the same keys, trace ids and sampling decisions in every run, as dict layouts and so
    instruction counts depend on them."""
    keys = random.Random(0)
    uuid.uuid4 = lambda: uuid.UUID(int=keys.getrandbits(128), version=4)
    random.seed(0)


if "--child" in sys.argv:
    _same_randomness_every_time()

sys.path.insert(0, str(Path(__file__).parent))

import bench_overhead as bench  # noqa: E402
import profile_hayscope as profile  # noqa: E402
from opentelemetry import trace  # noqa: E402

from hayscope import TracedAsyncPipeline  # noqa: E402

VARIANTS = ("bare", "hayscope", "hayscope-1pct", "otel-haystack")
WARM_UP_RUNS = 100
HASH_SEED = "0"  # dict layouts, and so instruction counts, depend on it
NO_SPANS = "no-spans"
# hayscope with one part left out -> the patches that leave it out (NO_SPANS: a no-op tracer provider)
PARTS: dict[str, tuple[Any, ...] | str] = {
    "spans (built, ended, queued for export)": NO_SPANS,
    "metric samples with exemplars": profile.NO_METRICS,
    "loop-held timing": profile.NO_LOOP_HELD_TIMER,
    "schedule-wait hook": profile.NO_SCHEDULE_HOOK,
}
ALL_PARTS = "all"


def _variant(name: str) -> bench.Variant:
    return {variant.name: variant for variant in bench.timed_variants()}[name]


def _workload(name: str) -> bench.Workload:
    return {workload.name: workload for workload in bench.WORKLOADS}[name]


async def _child(variant_name: str, workload_name: str, runs: int, part: str) -> None:
    """In the process under callgrind: warm up, then the counted runs between two handshakes."""
    variant, workload = _variant(variant_name), _workload(workload_name)
    pipeline = variant.build(workload)
    left_out = list(PARTS.values()) if part == ALL_PARTS else [PARTS[part]] if part else []
    if NO_SPANS in left_out:
        assert isinstance(pipeline, TracedAsyncPipeline)
        pipeline.configure_telemetry(tracer_provider=trace.NoOpTracerProvider())
    patches = tuple(patch for patches in left_out if patches != NO_SPANS for patch in patches)
    with variant.active(), profile.patched(patches):
        await bench.run_sequential(pipeline, workload, WARM_UP_RUNS)
        variant.settle()
        gc.collect()
        gc.disable()  # whether a full collection lands in the window or not would swing the count
        _handshake("ready")
        await bench.run_sequential(pipeline, workload, runs)
        variant.settle()
        _handshake("done")
        gc.enable()
    variant.shutdown()


def _handshake(word: str) -> None:
    print(word, flush=True)
    sys.stdin.readline()


def count(variant: str, workload: str, runs: int, part: str = "") -> float:
    """Instructions per component execution of `variant` on `workload` (without `part`, one of
    PARTS' keys), over `runs` runs."""
    with tempfile.TemporaryDirectory() as directory:
        output = os.path.join(directory, "callgrind.out")
        child = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={output}",
                sys.executable,
                __file__,
                "--child",
                variant,
                workload,
                str(runs),
                part,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": HASH_SEED},
        )
        assert child.stdin is not None and child.stdout is not None
        for word, switch in (("ready", "on"), ("done", "off")):
            line = child.stdout.readline().strip()
            if line != word:
                child.kill()
                raise RuntimeError(f"{variant} on {workload}: expected {word!r} from the child, got {line!r}")
            subprocess.run(["callgrind_control", "-i", switch, str(child.pid)], check=True, capture_output=True)
            child.stdin.write("\n")
            child.stdin.flush()
        if child.wait() != 0:
            raise RuntimeError(f"{variant} on {workload}: the child failed (exit {child.returncode})")
        instructions = max(_total(path) for path in glob.glob(output + "*"))
    return instructions / runs / _workload(workload).components


def _total(path: str) -> int:
    """The instructions counted in one callgrind dump (its largest summary or totals line)."""
    with open(path) as dump:
        totals = [int(line.split()[1]) for line in dump if line.startswith(("summary:", "totals:"))]
    return max(totals, default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100, help="counted runs per variant (default 100)")
    parser.add_argument("--workload", action="append", choices=[w.name for w in bench.WORKLOADS])
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--parts", action="store_true", help="count hayscope without each of its parts instead")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, workload, runs, part = args.child
        asyncio.run(_child(variant, workload, int(runs), part))
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind (it brings callgrind_control).")
    print(f"hayscope: {bench.sdk_source()}\n")
    report: dict[str, Any] = {"hayscope": bench.sdk_source(), "runs": args.runs}
    if args.parts:
        report["parts"] = _parts(args.runs)
    else:
        print("| workload | variant | instructions per component | over bare | × otel-haystack's overhead |")
        print("|---|---|---:|---:|---:|")
        workloads = args.workload or [workload.name for workload in bench.WORKLOADS]
        report["results"] = [_workload_counts(workload, args.runs) for workload in workloads]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def _workload_counts(workload: str, runs: int) -> dict[str, Any]:
    counts = {variant: count(variant, workload, runs) for variant in VARIANTS}
    over = {variant: counts[variant] - counts["bare"] for variant in VARIANTS}
    for variant in VARIANTS:
        ratio = "" if variant == "bare" else f"{over[variant] / over['otel-haystack']:.2f}"
        extra = "—" if variant == "bare" else f"{over[variant]:,.0f}"
        print(f"| {workload} | {variant} | {counts[variant]:,.0f} | {extra} | {ratio} |", flush=True)
    return {"workload": workload, "instructions_per_component": counts}


def _parts(runs: int) -> dict[str, float]:
    """What each part of hayscope costs on chain8-async: hayscope's count less its count without it."""
    workload = bench.CHAIN_ASYNC.name
    whole = count("hayscope", workload, runs)
    bare = count("bare", workload, runs)
    print(f"| part ({workload}) | instructions per component |\n|---|---:|")
    print(f"| everything, every run sampled | {whole - bare:,.0f} |")
    costs = {}
    for part in PARTS:
        costs[part] = whole - count("hayscope", workload, runs, part)
        print(f"| {part} | {costs[part]:,.0f} |", flush=True)
    # Measured, not the difference: the parts overlap (without the loop-held timing or the
    # schedule-wait hook there is also a histogram and a span attribute less).
    rest = count("hayscope", workload, runs, ALL_PARTS) - bare
    print(f"| all of these left out: hooks, contexts, executions, the run's own records | {rest:,.0f} |")
    return {"everything": whole - bare, **costs, "rest": rest}


if __name__ == "__main__":
    main()
