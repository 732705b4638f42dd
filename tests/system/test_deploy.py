"""Issue 24, item 3: the deployment kit in deploy/ validates, and agrees with the service.

No container runtime, cluster or Helm is reachable here, so the files are checked with
what installs from the package registries: the Compose file against the Compose
specification's JSON schema that `check-jsonschema` ships (vendored there with its
license), every Kubernetes object but the ServiceMonitor against the schemas
`kubernetes-validate` ships (strict: an unknown field is an error). No registry package
ships the Prometheus Operator's ServiceMonitor schema for this Python, so it is checked
against the Service it selects. Beyond the schemas: the commands parse with `okr`'s own
argument parser, every setting is one the service has, the selectors and ports meet, the
drain fits in the grace period, and HAProxy's own check accepts its configuration.
tests/system/test_topology.py runs the same arrangement (PgBouncer, replicas, HAProxy) for real.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml

from service.cli import parser
from service.settings import Settings
from tests.factories import ROOT

ROOT = ROOT
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose"
KUBE = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.33"  # the oldest schema this kit is checked against…
NEWEST = kubernetes_validate.utils.latest_version()  # …and the newest one shipped


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def kube_objects() -> dict[str, dict]:
    """Every object the kustomization lists, by kind."""
    kustomization = load(KUBE / "kustomization.yaml")
    objects: dict[str, dict] = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((KUBE / name).read_text()):
            assert doc["kind"] not in objects, doc["kind"]
            objects[doc["kind"]] = doc
    return objects


def setting_names() -> set[str]:
    """The settings class's variables, and those a module reads from the environment
    itself (logs, traces)."""
    source = "".join(p.read_text() for p in (ROOT / "service").rglob("*.py"))
    direct = set(re.findall(r'"(OKR_[A-Z_]+)"', source))
    return {f"OKR_{name.upper()}" for name in Settings.model_fields} | direct


def subset(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- Compose ----------------------------------------------------------------------------------


def host(url: str) -> str | None:
    """The host of a URL in the Compose file, its ${VARIABLES} put in as Compose does."""
    return urlparse(re.sub(r"\$\{[^}]*\}", "secret", url)).hostname


def compose_schema() -> dict:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def test_the_compose_file_follows_the_compose_specification():
    schema = compose_schema()
    document = load(COMPOSE / "compose.yaml")
    jsonschema.validators.validator_for(schema)(schema).validate(document)
    # and a broken one would not pass: the schema is really applied
    broken = {**document, "services": {"lb": {"image": "haproxy", "ports": [{"bogus": 1}]}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validators.validator_for(schema)(schema).validate(broken)


def test_the_compose_arrangement_is_the_tested_one():
    services = load(COMPOSE / "compose.yaml")["services"]
    assert {"postgres", "pgbouncer", "migrate", "okr-1", "okr-2", "lb", "prometheus"} <= set(
        services
    )
    replicas = [name for name in services if name.startswith("okr-")]
    for name in [*replicas, "migrate"]:
        service = services[name]
        env = service["environment"]
        assert set(env) <= setting_names(), set(env) - setting_names()
        assert host(env["OKR_DATABASE_URL"]) == "pgbouncer"
        assert host(env["OKR_DATABASE_DIRECT_URL"]) == "postgres"
        assert env["OKR_DATABASE_POOLER"] == "pgbouncer"
        args = parser().parse_args(service["command"][1:])
        assert args.func.__name__ == ("cmd_migrate" if name == "migrate" else "cmd_serve")
    assert services["pgbouncer"]["environment"]["POOL_MODE"] == "transaction"
    for name in replicas:
        service = services[name]
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        check = " ".join(service["healthcheck"]["test"])
        assert "/healthz" in check and "/readyz" in check
        drain = parser().parse_args(service["command"][1:]).drain_seconds
        assert drain < int(service["stop_grace_period"].rstrip("s"))
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    # The load balancer and Prometheus know the replicas, each by its own address.
    cfg = (COMPOSE / "haproxy.cfg").read_text()
    assert sorted(re.findall(r"^\s+server (\S+) (\S+):8000 check", cfg, re.M)) == [
        (n, n) for n in sorted(replicas)
    ]
    assert "option httpchk GET /readyz" in cfg
    scrape = load(COMPOSE / "prometheus.yml")["scrape_configs"][0]
    assert scrape["metrics_path"] == "/metrics"
    assert sorted(scrape["static_configs"][0]["targets"]) == [f"{n}:8000" for n in replicas]
    assert "statement_timeout" in (COMPOSE / "initdb" / "10-okr.sql").read_text()


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_compose_load_balancer_configuration():
    done = subprocess.run(
        ["haproxy", "-c", "-f", str(COMPOSE / "haproxy.cfg")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "Configuration file is valid" in done.stdout + done.stderr


# --- Kubernetes -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [KUBERNETES_VERSION, NEWEST])
def test_every_kubernetes_object_follows_its_schema(version: str):
    objects = kube_objects()
    assert set(objects) == {
        "ConfigMap", "Secret", "Job", "Deployment", "Service", "PodDisruptionBudget",
        "ServiceMonitor",
    }  # fmt: skip
    for kind, obj in objects.items():
        if kind == "ServiceMonitor":
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(obj, version, strict=True)
            continue
        kubernetes_validate.validate(obj, version, strict=True)
    # and a wrong field would not pass: the schemas are really applied
    wrong = json.loads(json.dumps(objects["Deployment"]))
    wrong["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, version, strict=True)


def test_the_kubernetes_objects_agree_with_each_other_and_with_the_service():
    o = kube_objects()
    deployment, service, pdb, monitor = (
        o["Deployment"], o["Service"], o["PodDisruptionBudget"], o["ServiceMonitor"],
    )  # fmt: skip
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert subset(deployment["spec"]["selector"]["matchLabels"], labels)
    assert subset(service["spec"]["selector"], labels)
    assert subset(pdb["spec"]["selector"]["matchLabels"], labels)
    assert deployment["spec"]["replicas"] > 1 and "maxUnavailable" in pdb["spec"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    (container,) = pod["spec"]["containers"]
    args = parser().parse_args(container["command"][1:])
    assert args.func.__name__ == "cmd_serve"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    # the endpoints drop the pod, then SIGTERM drains for --drain-seconds: all within
    # the grace period, or the kubelet kills the drain
    assert pre_stop + args.drain_seconds < pod["spec"]["terminationGracePeriodSeconds"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    port = container["ports"][0]
    assert port["containerPort"] == args.port and port["name"] == "http"

    # Settings: from the ConfigMap and the Secret, each one a setting the service has.
    sources = {s.get("configMapRef", s.get("secretRef"))["name"] for s in container["envFrom"]}
    assert sources == {o["ConfigMap"]["metadata"]["name"], o["Secret"]["metadata"]["name"]}
    settings = {**o["ConfigMap"]["data"], **o["Secret"]["stringData"]}
    assert set(settings) <= setting_names(), set(settings) - setting_names()
    assert {"OKR_DATABASE_URL", "OKR_DATABASE_DIRECT_URL", "OKR_JWT_SECRET"} <= set(
        o["Secret"]["stringData"]
    )
    assert settings["OKR_DATABASE_POOLER"] == "pgbouncer"
    # The placeholders cannot go live: production refuses them.
    values = {k[4:].lower(): v for k, v in settings.items()}
    with pytest.raises(ValueError, match="OKR_JWT_SECRET"):
        Settings(**values)

    # The migration: `okr migrate` with the same settings, before the rollout.
    job = o["Job"]
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert parser().parse_args(migrate["command"][1:]).func.__name__ == "cmd_migrate"
    assert migrate["envFrom"] == container["envFrom"] and migrate["image"] == container["image"]
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"

    # The ServiceMonitor (no schema shipped): it selects the Service, by a port it has,
    # with the token the replicas require.
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert subset(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    credentials = endpoint["authorization"]["credentials"]
    assert credentials["name"] == o["Secret"]["metadata"]["name"]
    assert credentials["key"] == "OKR_METRICS_TOKEN" in o["Secret"]["stringData"]
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "authorization"}


def test_the_kustomization_lists_every_manifest_and_the_image():
    kustomization = load(KUBE / "kustomization.yaml")
    files = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert kustomization["kind"] == "Kustomization"
    images = {i["name"] for i in kustomization["images"]}
    used = {
        c["image"] for c in kube_objects()["Deployment"]["spec"]["template"]["spec"]["containers"]
    }
    assert used <= images
