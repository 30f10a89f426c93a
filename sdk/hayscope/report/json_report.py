"""The report's numbers as JSON: the model's fields one to one, plus a `schema_version`.

Keys are the field names of the dataclasses in model.py; every time is in seconds and its key ends
in `_seconds`; shares are fractions from 0 to 1; absent values are `null`. The top level:

- `schema_version` (int), `title`, `wall_seconds`, `percentile_method` ("nearest-rank"), `verdict`,
  `notes` (list of strings);
- `runs`, `runs_ok`, `runs_error`, `runs_cancelled` (all runs, from the metrics), `traced_runs` (runs
  with spans), `throughput_runs_per_second` (ok and error runs per wall second);
- `pipelines`: per pipeline `name`, the run counts, `p50_seconds` .. `max_seconds`, `mean_seconds`,
  `total_run_seconds`, `throughput_runs_per_second`;
- `components`: per pipeline, component and mode: `executions`, `errors`, `cancelled`, duration
  percentiles, `queue_wait_p95_seconds`, `loop_held_p95_seconds`, `schedule_wait_p95_seconds`, the
  `*_total_seconds` of each part, `share_of_run_time`, `queued_share`, `schedule_wait_share`,
  `blocked_seconds`, `error_types`, `duration_sample_seconds` (sorted, at most 1000);
- `loop`: heartbeat `lag_p99_seconds`, `lag_max_seconds`, `lag_samples`, `histogram_lag_p99_seconds`,
  `histogram_observations`, `blocked_total_seconds`, `blocked` ([{pipeline, component, seconds}]);
- `executor`: `samples`, `max_busy`, `max_workers`, `saturation`, `max_queue_depth`, `saturated_share`;
- `timeline`: [{t_seconds, loop_lag_seconds, runs_in_flight, executor_busy, executor_max,
  executor_queue_depth}];
- `slowest_run`: null or {pipeline, trace_id, span_id, duration_seconds, status, omitted_rows,
  rows: [{depth, offset_seconds, duration_seconds, name, kind, mode, status}]}.

`report_from_json` reads such a document back into the model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
from typing import Any, Final, Union, get_args, get_origin, get_type_hints

from hayscope.report.model import Report

__all__ = ["SCHEMA_VERSION", "report_from_json", "report_to_json", "write_json"]

SCHEMA_VERSION: Final = 1


def report_to_json(report: Report) -> dict[str, Any]:
    """The report as a dict of JSON types only (lists, not tuples), `schema_version` first."""
    return {"schema_version": SCHEMA_VERSION, **_plain(dataclasses.asdict(report))}


def to_json_text(report: Report, indent: int | None = 2) -> str:
    """`report_to_json` serialized; any non-finite number (there should be none) becomes null."""
    return json.dumps(_finite(report_to_json(report)), indent=indent, ensure_ascii=False, allow_nan=False)


def write_json(report: Report, path: str | os.PathLike[str]) -> None:
    """Write the report's JSON to `path` (UTF-8)."""
    with open(path, "w", encoding="utf-8") as out:
        out.write(to_json_text(report))
        out.write("\n")


def report_from_json(data: dict[str, Any]) -> Report:
    """The `Report` a `report_to_json` dict describes; ValueError when it is not one."""
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        version = data.get("schema_version") if isinstance(data, dict) else None
        raise ValueError(f"not a hayscope report of schema_version {SCHEMA_VERSION} (got {version!r})")
    try:
        return _decode(Report, data)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"not a valid hayscope report: {type(error).__name__}: {error}") from error


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _decode(tp: Any, value: Any) -> Any:
    """`value` (from JSON) as type `tp` of the model: dataclasses, tuples, optionals, float, int, str."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [arg for arg in get_args(tp) if arg is not type(None)]
        return _decode(inner, value)
    if origin is tuple:
        item_type = get_args(tp)[0]
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {value!r}")
        return tuple(_decode(item_type, item) for item in value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise TypeError(f"expected an object for {tp.__name__}, got {value!r}")
        hints = get_type_hints(tp)
        return tp(**{f.name: _decode(hints[f.name], value[f.name]) for f in dataclasses.fields(tp) if f.name in value})
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {value!r}")
        return float(value)
    if tp in (int, str) and not isinstance(value, tp):
        raise TypeError(f"expected {tp.__name__}, got {value!r}")
    return value
