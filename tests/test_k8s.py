"""deploy/k8s: valid against the Kubernetes schemas (strict), and in step with what the code reads."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from flask import Flask

from flask_gnar import db, health, sqs
from flask_gnar.config import parse_bool
from flask_gnar.serve import grace_seconds, shutdown_delay, worker_count
from flask_gnar.state import init_state
from helpers import ROOT

K8S = ROOT / "deploy" / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))
KUBERNETES = kubernetes_validate.latest_version()
SOURCE = "\n".join(path.read_text() for path in (ROOT / "flask_gnar").glob("*.py"))
CONFIGURATION_DOC = (ROOT / "docs" / "configuration.rst").read_text()
#: boto3's own variables the manifests may set.
BOTO3_VARIABLES = {"AWS_DEFAULT_REGION"}
#: What the supervisor waits past the grace period before it kills workers (serve.py).
SUPERVISOR_MARGIN = 5.0


def resources() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, document)
        for path in MANIFESTS
        for document in yaml.safe_load_all(path.read_text())
        if document and document["kind"] != "Kustomization"
    ]


def find(kind: str, name: str) -> dict[str, Any]:
    return next(doc for _, doc in resources() if doc["kind"] == kind and doc["metadata"]["name"] == name)


SERVICES = [doc["metadata"]["name"] for _, doc in resources() if doc["kind"] == "Deployment"]
CONFIG = find("ConfigMap", "gnar-config")["data"]


def pod(service: str) -> dict[str, Any]:
    return find("Deployment", service)["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def container(service: str) -> dict[str, Any]:
    return next(c for c in pod(service)["containers"] if c["name"] == service)


def literal_env(spec: dict[str, Any]) -> dict[str, str]:
    """The container's environment: the ConfigMap it reads, then its own values (secrets as placeholders)."""
    env = {}
    for source in spec.get("envFrom", []):
        assert source["configMapRef"]["name"] == "gnar-config"
        env.update(CONFIG)
    for item in spec.get("env", []):
        env[item["name"]] = item.get("value", f"secret-placeholder-for-{item['name'].lower()}")
    return env


def test_there_are_manifests_for_both_examples() -> None:
    assert sorted(SERVICES) == ["piste", "powder"]


@pytest.mark.parametrize("name, document", resources(), ids=lambda value: value if isinstance(value, str) else "")
def test_every_manifest_is_valid_in_strict_mode(name: str, document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_strict_mode_catches_a_misspelt_field() -> None:
    deployment = copy.deepcopy(find("Deployment", "piste"))
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["periodSecond"] = probe.pop("periodSeconds")

    with pytest.raises(kubernetes_validate.ValidationError, match="periodSecond"):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_the_kustomization_applies_every_manifest_but_the_secret_template() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())

    assert sorted(kustomization["resources"]) == sorted(
        path.name for path in MANIFESTS if path.name not in {"kustomization.yaml", "secret.example.yaml"}
    )


@pytest.mark.parametrize("service", SERVICES)
def test_probes_use_the_health_paths_on_the_served_port(service: str) -> None:
    spec = container(service)
    env = literal_env(spec)
    port = spec["ports"][0]

    assert not any(name.startswith("GNAR_HEALTH_") for name in env)  # so the defaults apply
    assert spec["readinessProbe"]["httpGet"] == {"path": health.DEFAULT_READY_PATH, "port": port["name"]}
    assert spec["livenessProbe"]["httpGet"] == {"path": health.DEFAULT_LIVE_PATH, "port": port["name"]}
    # the example listens on <SERVICE>_HTTP_PORT; the Service sends its port there
    assert int(env[f"{service.upper()}_HTTP_PORT"]) == port["containerPort"]
    service_port = find("Service", service)["spec"]["ports"][0]
    assert service_port["targetPort"] == port["name"]
    assert service_port["port"] == port["containerPort"]  # what <SERVICE>_SERVICE_PORT tells peers
    assert parse_bool(env[f"{service.upper()}_PRODUCTION"]) is True


@pytest.mark.parametrize("service", SERVICES)
def test_shutdown_timings_fit_in_the_termination_grace_period(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = container(service)
    for name, value in literal_env(spec).items():
        monkeypatch.setenv(name, value)
    state = init_state(Flask(service))  # reads the variables as the service does

    grace = grace_seconds(state)
    delay = shutdown_delay(state)
    workers = worker_count(state)
    stop_timeout = state.settings.get(
        "SQS_STOP_TIMEOUT_SECONDS", sqs.parse_non_negative_float, default=sqs.DEFAULT_STOP_TIMEOUT_SECONDS
    )
    termination = pod(service)["terminationGracePeriodSeconds"]

    assert 0 < delay < grace
    assert grace + (SUPERVISOR_MARGIN if workers > 1 else 1) < termination
    if service == "powder":  # it polls: the message in hand is finished after the HTTP drain
        assert stop_timeout < grace
        assert grace + stop_timeout < termination
    else:
        readiness_timeout = state.settings.get(
            "PG_READINESS_TIMEOUT", db.parse_timeout_int, default=db.DEFAULT_READINESS_TIMEOUT
        )
        assert spec["readinessProbe"]["timeoutSeconds"] > readiness_timeout


def variables() -> list[str]:
    names = set(CONFIG)
    for service in SERVICES:
        for spec in [*pod(service).get("initContainers", []), *pod(service)["containers"]]:
            names.update(item["name"] for item in spec.get("env", []))
    return sorted(names)


@pytest.mark.parametrize("name", variables())
def test_every_variable_is_one_the_code_reads(name: str) -> None:
    if name in BOTO3_VARIABLES:
        return
    service = name.split("_")[0].lower()
    if service in SERVICES:
        main = (ROOT / "examples" / service / "app" / "main.py").read_text()
        assert f'"{name}"' in main, f"examples/{service}/app/main.py does not read {name}"
        return
    if name.startswith("OTEL_"):
        import opentelemetry.sdk.environment_variables as otel

        assert hasattr(otel, name), f"{name} is not one of OpenTelemetry's variables"
        return
    assert name.startswith("GNAR_"), f"{name} is read by nothing"
    setting = name.removeprefix("GNAR_")
    assert re.search(rf'"{setting}"', SOURCE), f"flask_gnar reads no setting {setting} ({name})"
    assert f"``{setting}``" in CONFIGURATION_DOC, f"docs/configuration.rst does not list {setting}"


def test_secrets_and_the_config_map_the_pods_name_exist() -> None:
    secret = find("Secret", "gnar-secrets")
    for service in SERVICES:
        for spec in [*pod(service).get("initContainers", []), *pod(service)["containers"]]:
            for item in spec.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "gnar-secrets" and ref["key"] in secret["stringData"]


def test_piste_migrates_in_an_init_container_of_the_same_image() -> None:
    (init,) = pod("piste")["initContainers"]
    main = container("piste")
    module = main["command"][-1]

    assert init["image"] == main["image"]
    assert init["command"] == ["flask", "--app", module, "gnar", "migrate"]
    # the same settings as the service, minus those about serving
    assert {i["name"] for i in init["env"]} == {i["name"] for i in main["env"]} - {
        "PISTE_HTTP_PORT", "GNAR_WORKERS", "GNAR_SHUTDOWN_DELAY_SECONDS", "GNAR_SHUTDOWN_GRACE_SECONDS",
        "GNAR_PG_MIGRATE",
    }
    assert init["envFrom"] == main["envFrom"]
    assert parse_bool(literal_env(main)["GNAR_PG_MIGRATE"]) is False
    assert (ROOT / "examples" / "piste" / "migrations").is_dir()
