"""An instrumented HTTP client inside a component: its spans nest under the component span, on the loop and in a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from haystack import component
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

from hayscope.testing import span_tree


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = b"pong"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def server_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ping"
    server.shutdown()
    server.server_close()


@component
class SyncFetch:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    @component.output_types(body=str)
    def run(self, url: str) -> dict[str, Any]:
        return {"body": self.client.get(url).text}


@component
class AsyncFetch:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @component.output_types(body=str)
    def run(self, url: str) -> dict[str, Any]:
        raise NotImplementedError

    @component.output_types(body=str)
    async def run_async(self, url: str) -> dict[str, Any]:
        return {"body": (await self.client.get(url)).text}


async def test_http_client_spans_nest_under_the_component_that_made_the_call(capture, server_url):
    sync_client, async_client = httpx.Client(), httpx.AsyncClient()
    for client in (sync_client, async_client):
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=capture.tracer_provider)
    pipeline = capture.pipeline(name="fetching")
    pipeline.add_component("in_thread", SyncFetch(sync_client))
    pipeline.add_component("on_loop", AsyncFetch(async_client))

    result = await pipeline.run_async({"in_thread": {"url": server_url}, "on_loop": {"url": server_url}})
    sync_client.close()
    await async_client.aclose()

    assert result == {"in_thread": {"body": "pong"}, "on_loop": {"body": "pong"}}
    assert span_tree(capture.spans(), waits=False) == [
        "haystack.pipeline.run fetching",
        "  haystack.component.run in_thread",
        "    GET",
        "  haystack.component.run on_loop",
        "    GET",
    ]
