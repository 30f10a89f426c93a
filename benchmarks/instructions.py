"""CPU instructions per component execution, counted by valgrind: overhead figures that noise cannot move.

    python benchmarks/instructions.py [--runs K] [--workload NAME ...] [--json PATH]

Timings on a shared 2-core machine move by +-10 us per component from run to run; the number of
instructions a variant executes does not (with a fixed `PYTHONHASHSEED`, repeated counts agree to
0.01%). Each variant of bench_overhead.py runs in a process of its own under callgrind with
instrumentation off; after 100 warm-up runs it is switched on (`callgrind_control -i on`) for K
sequential runs and off again, and the spans queued meanwhile are flushed inside that window, so
exporting them counts too. Every thread is counted: for `chain8-sync`, the workers'.

Instructions are work, not time: a cache miss costs more than an instruction, and the same code
runs at different speeds on different machines. Read these figures next to bench_overhead.py's,
as the part of the overhead ratio that does not depend on the machine or its load.

Needs valgrind (`apt-get install valgrind`). About a minute per variant and workload.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_overhead as bench  # noqa: E402

VARIANTS = ("bare", "hayscope", "hayscope-1pct", "otel-haystack")
WARM_UP_RUNS = 100
HASH_SEED = "0"  # dict layouts, and so instruction counts, depend on it


def _variant(name: str) -> bench.Variant:
    return {variant.name: variant for variant in bench.timed_variants()}[name]


def _workload(name: str) -> bench.Workload:
    return {workload.name: workload for workload in bench.WORKLOADS}[name]


async def _child(variant_name: str, workload_name: str, runs: int) -> None:
    """In the process under callgrind: warm up, then the counted runs between two handshakes."""
    variant, workload = _variant(variant_name), _workload(workload_name)
    pipeline = variant.build(workload)
    with variant.active():
        await bench.run_sequential(pipeline, workload, WARM_UP_RUNS)
        variant.settle()
        _handshake("ready")
        await bench.run_sequential(pipeline, workload, runs)
        variant.settle()
        _handshake("done")
    variant.shutdown()


def _handshake(word: str) -> None:
    print(word, flush=True)
    sys.stdin.readline()


def count(variant: str, workload: str, runs: int) -> float:
    """Instructions per component execution of `variant` on `workload`, over `runs` runs."""
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
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, workload, runs = args.child
        asyncio.run(_child(variant, workload, int(runs)))
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind (it brings callgrind_control).")
    print(f"hayscope: {bench.sdk_source()}\n")
    print("| workload | variant | instructions per component | over bare | × otel-haystack's overhead |")
    print("|---|---|---:|---:|---:|")
    results = []
    for workload in args.workload or [w.name for w in bench.WORKLOADS]:
        counts = {variant: count(variant, workload, args.runs) for variant in VARIANTS}
        over = {variant: counts[variant] - counts["bare"] for variant in VARIANTS}
        for variant in VARIANTS:
            ratio = "" if variant == "bare" else f"{over[variant] / over['otel-haystack']:.2f}"
            extra = "—" if variant == "bare" else f"{over[variant]:,.0f}"
            print(f"| {workload} | {variant} | {counts[variant]:,.0f} | {extra} | {ratio} |", flush=True)
        results.append({"workload": workload, "instructions_per_component": counts})
    if args.json:
        args.json.write_text(
            json.dumps({"hayscope": bench.sdk_source(), "runs": args.runs, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
