"""hayscope: observability for Haystack async pipelines.

Importing hayscope sets no global state and starts nothing; `setup_telemetry()` does, and the
handle it returns undoes it.
"""

from hayscope._version import __version__
from hayscope.logs import add_trace_context
from hayscope.loop import LoopLagMonitor
from hayscope.metrics import CATALOGUE, register_metrics
from hayscope.pipeline import TracedAsyncPipeline
from hayscope.telemetry import Telemetry, setup_telemetry

__all__ = [
    "CATALOGUE",
    "LoopLagMonitor",
    "Telemetry",
    "TracedAsyncPipeline",
    "__version__",
    "add_trace_context",
    "register_metrics",
    "setup_telemetry",
]
