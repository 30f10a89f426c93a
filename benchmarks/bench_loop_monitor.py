"""The LoopLagMonitor's own cost: CPU time of an idle event loop with and without it.

    python benchmarks/bench_loop_monitor.py [--seconds S] [--rounds N]

Each round idles the loop for S seconds twice, once with a monitor at the default interval (heartbeat
every 0.1 s, watchdog checking every 0.05 s) and once without, in alternating order; the cost is the
difference in process CPU time, as a share of one core. Target: under 0.5%.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from prometheus_client import CollectorRegistry

from hayscope import LoopLagMonitor


async def idle(seconds: float, monitored: bool) -> float:
    """Process CPU seconds spent while the loop idles for `seconds`."""
    monitor = LoopLagMonitor(registry=CollectorRegistry()) if monitored else None
    if monitor is not None:
        monitor.start()
    started = time.process_time()
    await asyncio.sleep(seconds)
    spent = time.process_time() - started
    if monitor is not None:
        monitor.stop()
    return spent


async def main(seconds: float, rounds: int) -> None:
    costs = []
    for round_number in range(rounds):
        order = (True, False) if round_number % 2 == 0 else (False, True)
        spent = {monitored: await idle(seconds, monitored) for monitored in order}
        costs.append((spent[True] - spent[False]) / seconds)
    print(f"LoopLagMonitor at the default interval, {rounds} rounds of {seconds:g} s idle:")
    print(f"  CPU share of one core: median {statistics.median(costs):.3%} (min {min(costs):.3%}, max {max(costs):.3%})")
    print(f"  target under 0.5%: {'PASS' if statistics.median(costs) < 0.005 else 'FAIL'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.rounds))
