"""The docker-compose stack, checked statically: files, health checks, pinned images, ports, secrets.

No Docker engine is needed (nor used): the file is parsed with PyYAML and every
claim its header comment makes is checked against it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
#: environment variable names whose value is a credential: they belong in env files, never here
SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN|CREDENTIAL|PRIVATE|API_KEY", re.IGNORECASE)
#: ``[registry/]name:tag``, the tag neither empty nor ``latest``
PINNED = re.compile(r"^[\w.\-/:]+:(?!latest$)[\w][\w.\-]*(@sha256:[0-9a-f]{64})?$")


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _env_files(service: dict[str, Any]) -> list[str]:
    files = service.get("env_file", [])
    items = [files] if isinstance(files, str | dict) else list(files)
    return [item["path"] if isinstance(item, dict) else item for item in items]


def _from_images(dockerfile: Path) -> list[str]:
    images = []
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words and words[0].upper() == "FROM":
            images.append(next(w for w in words[1:] if not w.startswith("--")))
    return images


def test_compose_runs_the_documented_services() -> None:
    """The stack has PostgreSQL, Redis, two service replicas, Prometheus, Grafana, Jaeger, both exporters and Locust."""
    services = _services()
    expected = {
        "postgres",
        "redis",
        "sessionstore",
        "prometheus",
        "grafana",
        "jaeger",
        "redis-exporter",
        "postgres-exporter",
        "locust-master",
        "locust-worker",
    }
    assert expected <= set(services), sorted(expected - set(services))
    assert services["sessionstore"]["deploy"]["replicas"] == 2
    assert services["locust-worker"]["deploy"]["replicas"] >= 1
    assert "--worker" in services["locust-worker"]["command"]
    assert "--master" in services["locust-master"]["command"]


def test_every_referenced_file_exists() -> None:
    """Bind mounts, env files, the build context and Dockerfile, and the locustfile all exist in the repo."""
    missing = []
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")) and not (ROOT / source).exists():
                missing.append(f"{name}: volume {source}")
        for env_file in _env_files(service):
            if not (ROOT / env_file).is_file():
                missing.append(f"{name}: env_file {env_file}")
        build = service.get("build")
        if build is not None:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not (context / dockerfile).is_file():
                missing.append(f"{name}: build {context / dockerfile}")
        command = service.get("command", [])
        for word in command if isinstance(command, list) else command.split():
            if re.fullmatch(r"[\w./-]+\.(py|yml|yaml|json|sql|sh)", word) and not (ROOT / word).is_file():
                missing.append(f"{name}: command file {word}")
    assert not missing, missing


def test_every_service_has_a_health_check_or_a_reason() -> None:
    """A service without a health check says why in ``x-healthcheck-reason``; dependencies wait for health."""
    services = _services()
    unexplained = [
        name
        for name, service in services.items()
        if "healthcheck" not in service and not str(service.get("x-healthcheck-reason", "")).strip()
    ]
    assert not unexplained, unexplained
    for name, service in services.items():
        check = service.get("healthcheck")
        if check is not None:
            assert not check.get("disable", False), name
            assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
        for dependency, spec in dict(service.get("depends_on", {})).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if "healthcheck" in services[dependency] and dependency != "jaeger":
                assert spec.get("condition") == "service_healthy", f"{name} -> {dependency}"


def test_every_image_is_pinned() -> None:
    """Pulled images carry an explicit tag other than ``latest``; built images pin their base images."""
    for name, service in _services().items():
        if "build" in service:
            build = service["build"]
            dockerfile = ROOT / build["context"] / build.get("dockerfile", "Dockerfile")
            for image in _from_images(dockerfile):
                assert PINNED.match(image), f"{name}: base image {image} is not pinned"
            continue
        image = service.get("image", "")
        assert PINNED.match(image), f"{name}: image {image!r} is not pinned to a tag"


def test_host_ports_are_bound_to_loopback_only() -> None:
    """Every published port is bound to 127.0.0.1; nothing listens on the host's other interfaces."""
    for name, service in _services().items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"
                assert str(port).count(":") == 2, f"{name}: {port} (host ip, host port, container port)"


def test_no_secret_is_written_in_the_compose_file() -> None:
    """Credentials come from env files marked dev-only, never from literal values in docker-compose.yml."""
    for name, service in _services().items():
        environment = service.get("environment", {})
        pairs = (
            environment.items()
            if isinstance(environment, dict)
            else (entry.partition("=")[::2] for entry in environment)
        )
        for key, value in pairs:
            assert not SECRET_NAME.search(key), f"{name}: {key} is set in docker-compose.yml"
            assert "://" not in str(value) or "@" not in str(value), f"{name}: {key} embeds credentials"
        for env_file in _env_files(service):
            text = (ROOT / env_file).read_text(encoding="utf-8")
            assert "DEV-ONLY" in text, f"{env_file} must say its values are dev-only"


def test_grafana_and_prometheus_mounts_match_the_provisioning_layout() -> None:
    """Grafana gets the provisioning folders and the generated dashboards; Prometheus its config and rules."""
    services = _services()
    grafana = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    assert grafana["/etc/grafana/provisioning"] == "./dashboards/provisioning"
    assert grafana["/var/lib/grafana/dashboards"] == "./dashboards/grafana"
    provisioning = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/dashboards.yml").read_text())
    assert provisioning["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    env = "".join((ROOT / f).read_text() for f in _env_files(services["grafana"]))
    assert "GF_AUTH_ANONYMOUS_ENABLED=true" in env
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE=Viewer" in env
    prometheus = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    assert prometheus["/etc/prometheus"] == "./dashboards/prometheus"


@pytest.mark.parametrize("job", ["sessionstore", "redis", "postgres", "locust"])
def test_prometheus_scrapes_each_exporter_by_its_compose_name(job: str) -> None:
    """Every scrape target of dashboards/prometheus/prometheus.yml names a compose service and its port."""
    config = yaml.safe_load((ROOT / "dashboards/prometheus/prometheus.yml").read_text())
    services = _services()
    scrape = next(s for s in config["scrape_configs"] if s["job_name"] == job)
    if "dns_sd_configs" in scrape:
        targets = [f"{n}:{sd['port']}" for sd in scrape["dns_sd_configs"] for n in sd["names"]]
    else:
        targets = [t for sc in scrape["static_configs"] for t in sc["targets"]]
    for target in targets:
        host, _, port = target.partition(":")
        assert host in services, f"{job}: {host} is not a compose service"
        assert port.isdigit()
