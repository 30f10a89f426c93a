from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

# haystack's usage telemetry would try the network from a background thread; there is none here.
# Set before anything imports haystack.
os.environ["HAYSTACK_TELEMETRY_ENABLED"] = "False"

from hayscope.testing import TelemetryCapture  # noqa: E402


@pytest.fixture
def capture() -> Iterator[TelemetryCapture]:
    telemetry = TelemetryCapture()
    yield telemetry
    telemetry.shutdown()


@pytest.fixture
def context_errors(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    """Errors OpenTelemetry logs about its context, e.g. 'Failed to detach context'."""
    caplog.set_level(logging.ERROR, logger="opentelemetry.context")
    records: list[logging.LogRecord] = []
    yield records
    records.extend(r for r in caplog.records if r.name.startswith("opentelemetry.context"))
    assert not records, [r.getMessage() for r in records]
