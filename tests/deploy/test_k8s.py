"""deploy/k8s: every kustomization builds with the pinned kubectl, every resource is valid
against the Kubernetes schemas (CRDs against tests/deploy/schemas/), and the manifests agree
with the code they run: commands, settings, probe names, consumer names, who calls whom."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from gateway.routes.health import router as health_router
from gateway.settings import GatewaySettings
from services.generator.settings import GeneratorSettings
from services.judge.settings import JudgeSettings
from services.selector.settings import SelectorSettings
from services.taxonomy.settings import TaxonomySettings
from taxoforge.bus.topology import CONSUMERS, WORK_STREAM
from taxoforge.grpc_server import PROBE_SERVICES
from taxoforge.settings import ServiceSettings
from taxoforge_cli.stack import SERVICES
from tests.deploy.manifests import (
    BUILDS,
    K8S,
    NAMESPACE,
    OUTSIDE,
    ROOT,
    Doc,
    Peer,
    allowed,
    build,
    config_data,
    containers,
    env_of,
    label_selector_matches,
    named,
    of_kind,
    parse_quantity,
    pod_labels,
)

# The oldest Kubernetes these manifests promise to work on (native gRPC probes are GA since
# 1.27, the preStop sleep action is on by default since 1.30), and the newest schemas known.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
SCHEMAS = Path(__file__).parent / "schemas"
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda.sh-v1alpha1.json",
    ("cert-manager.io/v1", "Certificate"): "certificate-cert-manager.io-v1.json",
    ("cert-manager.io/v1", "Issuer"): "issuer-cert-manager.io-v1.json",
}
PROCESSES: dict[str, type[BaseSettings]] = {
    "services.taxonomy": TaxonomySettings,
    "services.generator": GeneratorSettings,
    "services.judge": JudgeSettings,
    "services.selector": SelectorSettings,
    "gateway": GatewaySettings,
}
# Secrets no kustomization makes (real credentials): README.md says how to create each.
HAND_MADE_SECRETS = {
    "taxoforge-llm",
    "taxoforge-nats-auth",
    "taxoforge-nats-tls",
    "taxoforge-tenants",
    "taxoforge-nats-creds",
    "nats-server-tls",
}
NATS_VALUES = K8S / "nats" / "values.yaml"
NATS_DEV_VALUES = K8S / "nats" / "values-dev.yaml"
CHART_DEFAULTS = Path(__file__).parent / "fixtures" / "nats-chart-values-2.14.2.yaml"
# The NATS chart's pod labels for the release "nats" (its nats.selectorLabels).
NATS_POD = Peer(
    {
        "app.kubernetes.io/name": "nats",
        "app.kubernetes.io/instance": "nats",
        "app.kubernetes.io/component": "nats",
    }
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Doc]]:
    scratch = tmp_path_factory.mktemp("kustomize")
    return {name: build(name, scratch) for name in BUILDS}


def _workloads(docs: list[Doc]) -> list[Doc]:
    return of_kind(docs, "Deployment")


def _process(deployment: Doc) -> str:
    """The module a Deployment's server container runs (``python -m MODULE ...``)."""
    command = containers(deployment)[0]["command"]
    assert command[:2] == ["python", "-m"], command
    return str(command[2])


def _settings_env_names(cls: type[BaseSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for field, info in cls.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseSettings):
            names |= _settings_env_names(kind)
        else:
            names.add(f"{prefix}{field}".upper())
    return names


def _chart_values() -> tuple[Doc, Doc, Doc]:
    defaults = yaml.safe_load(CHART_DEFAULTS.read_text())
    return (
        defaults,
        yaml.safe_load(NATS_VALUES.read_text()),
        yaml.safe_load(NATS_DEV_VALUES.read_text()),
    )


def _merged(base: Doc, over: Doc) -> Doc:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


# ---- every resource is valid ----


@pytest.mark.parametrize("name", BUILDS)
def test_every_resource_is_valid(built: dict[str, list[Doc]], name: str) -> None:
    docs = built[name]
    assert docs, f"{name} built nothing"
    errors: list[str] = []
    for doc in docs:
        what = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["metadata"].get("namespace") != NAMESPACE:
            errors.append(f"{what}: not in the namespace {NAMESPACE}")
        key = (doc["apiVersion"], doc["kind"])
        if key in CRD_SCHEMAS:
            schema = json.loads((SCHEMAS / CRD_SCHEMAS[key]).read_text())
            validator = jsonschema.Draft202012Validator(schema)
            errors += [
                f"{what}: {e.message} at {list(e.absolute_path)}"
                for e in validator.iter_errors(doc)
            ]
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{what} (Kubernetes {version}): {exc.message} at {list(exc.path)}")
            except kubernetes_validate.SchemaNotFoundError:
                errors.append(f"{what}: no schema for {key}; add one to tests/deploy/schemas/")
    assert not errors, f"{name}:\n" + "\n".join(errors)


def test_crd_schemas_reject_what_the_cluster_would_ignore(built: dict[str, list[Doc]]) -> None:
    """The vendored schemas are strict: a misspelt key or a missing lag threshold fails."""
    scaled = named(built["overlays/prod"], "ScaledObject", "judge")
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")]).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(scaled)
    typo = json.loads(json.dumps(scaled))
    typo["spec"]["triggers"][0]["metadata"]["lagTreshold"] = "64"
    assert not validator.is_valid(typo)
    missing = json.loads(json.dumps(scaled))
    del missing["spec"]["triggers"][0]["metadata"]["consumer"]
    assert not validator.is_valid(missing)


# ---- processes, images, settings ----


@pytest.mark.parametrize("name", ["base", "overlays/dev", "overlays/prod"])
def test_one_deployment_per_process_running_its_module(
    built: dict[str, list[Doc]], name: str
) -> None:
    docs = built[name]
    taxoforge = {
        d["metadata"]["name"]: _process(d)
        for d in _workloads(docs)
        if pod_labels(d).get("app.kubernetes.io/component") in ("service", "gateway")
    }
    assert taxoforge == {**{s: f"services.{s}" for s in SERVICES}, "gateway": "gateway"}
    for deployment in _workloads(docs):
        module = _process(deployment)
        assert importlib.util.find_spec(module) is not None, f"{module} does not exist"
        if module != "llama_cpp.server":
            assert importlib.util.find_spec(f"{module}.__main__") is not None, module


@pytest.mark.parametrize("name", ["base", "overlays/dev", "overlays/prod"])
def test_images_are_tagged_with_the_project_version(built: dict[str, list[Doc]], name: str) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for deployment in _workloads(built[name]):
        for container in containers(deployment):
            image = container["image"]
            repo, _, tag = image.rpartition(":")
            assert repo and "/" not in tag, f"{image}: no tag"
            assert tag == version, f"{image}: tag is not the project version {version}"
            assert repo.rsplit("/", 1)[-1] in ("taxoforge", "taxoforge-embedded"), image


@pytest.mark.parametrize("name", BUILDS[:3])
def test_environment_is_settings_the_process_accepts(
    built: dict[str, list[Doc]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every variable a Deployment sets itself is a setting of the process it runs, and the
    process' settings class accepts its whole environment, shared ConfigMap included (secrets
    stand in as placeholders)."""
    docs = built[name]
    for deployment in _workloads(docs):
        module = _process(deployment)
        if module not in PROCESSES:
            continue
        cls = PROCESSES[module]
        known = _settings_env_names(cls)
        server = containers(deployment)[0]
        for var in env_of(server):
            assert var in known, f"{deployment['metadata']['name']}: {var} is not a setting"
        env = config_data(docs, deployment)
        for var, entry in env_of(server).items():
            if "valueFrom" in entry:
                env[var] = "placeholder"
        for var in [v for v in os.environ if v.startswith("TAXOFORGE_")]:
            monkeypatch.delenv(var)
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        settings = cls()
        assert isinstance(settings, BaseModel)


def test_configmap_keys_are_settings(built: dict[str, list[Doc]]) -> None:
    """The shared ConfigMap goes to every process: each key is a setting of at least one."""
    known = set().union(*(_settings_env_names(cls) for cls in PROCESSES.values()))
    for name in BUILDS[:3]:
        for cm in of_kind(built[name], "ConfigMap"):
            unknown = set(cm["data"]) - known
            assert not unknown, f"{name}: ConfigMap {cm['metadata']['name']}: {unknown}"


# ---- references between resources ----


@pytest.mark.parametrize("name", BUILDS)
def test_services_and_budgets_select_one_deployment(built: dict[str, list[Doc]], name: str) -> None:
    docs = built[name]
    deployments = _workloads(docs)
    for kind in ("Service", "PodDisruptionBudget"):
        for doc in of_kind(docs, kind):
            selector = doc["spec"]["selector"]
            if kind == "Service":
                selector = {"matchLabels": selector}
            matches = [d for d in deployments if label_selector_matches(selector, pod_labels(d))]
            assert len(matches) == 1, f"{kind}/{doc['metadata']['name']} selects {len(matches)}"
            if kind == "Service":
                ports = {p["name"] for c in containers(matches[0]) for p in c.get("ports", [])}
                for port in doc["spec"]["ports"]:
                    assert port["targetPort"] in ports, (doc["metadata"]["name"], port)
    for deployment in deployments:
        selector = deployment["spec"]["selector"]
        assert label_selector_matches(selector, pod_labels(deployment))


@pytest.mark.parametrize("name", BUILDS)
def test_configmaps_and_secrets_referenced_exist(built: dict[str, list[Doc]], name: str) -> None:
    docs = built[name]
    configmaps = {d["metadata"]["name"] for d in of_kind(docs, "ConfigMap")}
    secrets = {d["metadata"]["name"] for d in of_kind(docs, "Secret")}
    readme = (K8S / "README.md").read_text()
    for deployment in _workloads(docs):
        spec = deployment["spec"]["template"]["spec"]
        wanted_cm: set[str] = set()
        wanted_secret: set[str] = set()
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                wanted_cm.add(source["configMapRef"]["name"])
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    wanted_secret.add(ref["secretKeyRef"]["name"])
                if "configMapKeyRef" in ref:
                    wanted_cm.add(ref["configMapKeyRef"]["name"])
            mounted = {m["name"] for m in container.get("volumeMounts", [])}
            volumes = {v["name"] for v in spec.get("volumes", [])}
            assert mounted <= volumes, f"{deployment['metadata']['name']}: {mounted - volumes}"
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                wanted_secret.add(volume["secret"]["secretName"])
            if "configMap" in volume:
                wanted_cm.add(volume["configMap"]["name"])
        assert wanted_cm <= configmaps, f"{name}: missing ConfigMaps {wanted_cm - configmaps}"
        for secret in wanted_secret - secrets:
            assert secret in HAND_MADE_SECRETS, f"{name}: Secret {secret} is made nowhere"
            assert f"`{secret}`" in readme, f"README.md does not say how to create {secret}"


def test_hand_made_secrets_are_all_documented() -> None:
    readme = (K8S / "README.md").read_text()
    for secret in HAND_MADE_SECRETS:
        assert f"`{secret}`" in readme, secret


# ---- probes, ports, shutdown ----


@pytest.mark.parametrize("name", BUILDS)
def test_services_probe_grpc_health_on_their_port(built: dict[str, list[Doc]], name: str) -> None:
    for deployment in _workloads(built[name]):
        labels = pod_labels(deployment)
        if labels.get("app.kubernetes.io/component") != "service":
            continue
        server = containers(deployment)[0]
        ports = {p["name"]: p["containerPort"] for p in server["ports"]}
        port = int(env_of(server)["TAXOFORGE_GRPC_PORT"]["value"])
        assert ports == {"grpc": port}
        for probe, service in (
            ("startupProbe", "liveness"),
            ("livenessProbe", "liveness"),
            ("readinessProbe", "readiness"),
        ):
            grpc = server[probe]["grpc"]
            assert grpc == {"port": port, "service": service}, (deployment["metadata"], probe)
            assert service in PROBE_SERVICES
        service_doc = named(built[name], "Service", deployment["metadata"]["name"])
        assert [p["port"] for p in service_doc["spec"]["ports"]] == [port]
        # Headless, so the name lists every pod and gRPC clients balance over them (a
        # headless Service does no port mapping: the pods must listen on the Service's port).
        assert service_doc["spec"].get("clusterIP") == "None", service_doc["metadata"]


def test_gateway_probes_paths_it_serves(built: dict[str, list[Doc]]) -> None:
    served = {route.path for route in health_router.routes}  # type: ignore[attr-defined]
    gateway = named(built["base"], "Deployment", "gateway")
    server = containers(gateway)[0]
    port = int(env_of(server)["TAXOFORGE_HTTP_PORT"]["value"])
    assert server["ports"] == [{"name": "http", "containerPort": port}]
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert server[probe]["httpGet"]["path"] in served
        assert server[probe]["httpGet"]["port"] == "http"


def test_gateway_finds_services_and_tenants(built: dict[str, list[Doc]]) -> None:
    docs = built["overlays/prod"]
    gateway = named(docs, "Deployment", "gateway")
    env = config_data(docs, gateway)
    for service in SERVICES:
        host, port = env[f"TAXOFORGE_{service.upper()}_ADDR"].split(":")
        svc = named(docs, "Service", host)
        assert [p["port"] for p in svc["spec"]["ports"]] == [int(port)]
    assert env["TAXOFORGE_AUTH"] == "keys"
    assert "TAXOFORGE_CORS_ORIGINS" not in env
    tenants = Path(env["TAXOFORGE_TENANTS_FILE"])
    server = containers(gateway)[0]
    mount = next(m for m in server["volumeMounts"] if m["mountPath"] == str(tenants.parent))
    # A whole-directory mount: subPath mounts never see a rotated Secret.
    assert "subPath" not in mount
    volume = next(
        v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    )
    assert volume["secret"]["secretName"] == "taxoforge-tenants"
    selector = named(docs, "Deployment", "selector")
    judge_host, judge_port = config_data(docs, selector)["TAXOFORGE_JUDGE_ADDR"].split(":")
    assert judge_host == "judge" and int(judge_port) == 50051


@pytest.mark.parametrize("name", ["base", "overlays/dev", "overlays/prod"])
def test_shutdown_fits_the_grace_period(built: dict[str, list[Doc]], name: str) -> None:
    """A model call in flight at SIGTERM may finish (drain >= call timeout), and the drain
    and the rest of the shutdown end before Kubernetes' SIGKILL."""
    docs = built[name]
    for deployment in _workloads(docs):
        if pod_labels(deployment).get("app.kubernetes.io/component") != "service":
            continue
        env = config_data(docs, deployment)
        drain = float(env["TAXOFORGE_DRAIN_TIMEOUT_S"])
        call = float(env["TAXOFORGE_LLM_TIMEOUT_S"])
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert drain >= call, deployment["metadata"]["name"]
        assert grace >= drain + 30, deployment["metadata"]["name"]


@pytest.mark.parametrize("name", ["base", "overlays/dev", "overlays/prod"])
def test_spooled_files_fit_in_tmp(built: dict[str, list[Doc]], name: str) -> None:
    docs = built[name]
    largest = {"gateway": "TAXOFORGE_MAX_UPLOAD_BYTES", "selector": "TAXOFORGE_IMPORT_MAX_BYTES"}
    for deployment in _workloads(docs):
        spec = deployment["spec"]["template"]["spec"]
        tmp = next(v for v in spec["volumes"] if v["name"] == "tmp")
        size = parse_quantity(tmp["emptyDir"]["sizeLimit"])
        server = spec["containers"][0]
        assert parse_quantity(server["resources"]["limits"]["ephemeral-storage"]) >= size
        setting = largest.get(deployment["metadata"]["name"])
        if setting:
            assert int(config_data(docs, deployment)[setting]) < size


# ---- security ----


@pytest.mark.parametrize("name", BUILDS)
def test_pods_run_locked_down(built: dict[str, list[Doc]], name: str) -> None:
    for deployment in _workloads(built[name]):
        what = f"{name}: {deployment['metadata']['name']}"
        spec = deployment["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False, what
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001, what
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, what
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["defaultMode"] == 0o440, (what, volume["name"])
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, what
            assert ctx["readOnlyRootFilesystem"] is True, what
            assert ctx["capabilities"] == {"drop": ["ALL"]}, what
            assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == 10001, what
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            tmp = next(v for v in spec["volumes"] if v["name"] == mounts["/tmp"])
            assert "emptyDir" in tmp, what
            for key in ("requests", "limits"):
                for resource in ("cpu", "memory", "ephemeral-storage"):
                    assert resource in container["resources"][key], (what, key, resource)


@pytest.mark.parametrize("name", BUILDS[:3])
def test_network_paths(built: dict[str, list[Doc]], name: str) -> None:
    docs = built[name]
    pods = {d["metadata"]["name"]: Peer(pod_labels(d)) for d in _workloads(docs)}
    services = [pods[s] for s in SERVICES]
    gateway = pods["gateway"]

    # Every selector of every policy picks something that exists (no typo'd label).
    everyone = [*pods.values(), NATS_POD]
    for policy in of_kind(docs, "NetworkPolicy"):
        spec = policy["spec"]
        assert any(
            p.labels is not None and label_selector_matches(spec["podSelector"], p.labels)
            for p in everyone
        ), policy["metadata"]["name"]
        for rule in [*spec.get("ingress", []), *spec.get("egress", [])]:
            for peer in [*rule.get("from", []), *rule.get("to", [])]:
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    assert any(
                        p.labels is not None
                        and label_selector_matches(peer["podSelector"], p.labels)
                        for p in everyone
                    ), policy["metadata"]["name"]

    # Ingress is denied by default, everything else below is an explicit allowance.
    assert any(
        p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"]
        for p in of_kind(docs, "NetworkPolicy")
    )
    assert allowed(docs, OUTSIDE, gateway, 8080)
    for service in services:
        assert allowed(docs, gateway, service, 50051)
        assert not allowed(docs, OUTSIDE, service, 50051)
        assert allowed(docs, service, NATS_POD, 4222)
        assert allowed(docs, service, OUTSIDE, 443)  # the model endpoint
    assert allowed(docs, gateway, NATS_POD, 4222)
    assert not allowed(docs, gateway, OUTSIDE, 443)
    assert not allowed(docs, OUTSIDE, NATS_POD, 4222)
    assert allowed(docs, NATS_POD, NATS_POD, 6222)
    # gRPC between services: only the selector's calls to the judge.
    for src in SERVICES:
        for dst in SERVICES:
            expected = (src, dst) == ("selector", "judge")
            assert allowed(docs, pods[src], pods[dst], 50051) == expected, (src, dst)
    if "llm" in pods:
        for service in services:
            assert allowed(docs, service, pods["llm"], 8081)
        assert not allowed(docs, gateway, pods["llm"], 8081)
        assert not allowed(docs, pods["llm"], NATS_POD, 4222)
        assert not allowed(docs, pods["llm"], OUTSIDE, 443)
    # DNS for every taxoforge pod.
    dns = [
        p
        for p in of_kind(docs, "NetworkPolicy")
        if any(
            {"protocol": "UDP", "port": 53} in rule.get("ports", [])
            for rule in p["spec"].get("egress", [])
        )
    ]
    for pod in pods.values():
        assert pod.labels is not None
        assert any(label_selector_matches(p["spec"]["podSelector"], pod.labels) for p in dns)


# ---- scaling ----


def _scaled_targets(docs: list[Doc]) -> dict[str, Doc]:
    out = {}
    for doc in [*of_kind(docs, "ScaledObject"), *of_kind(docs, "HorizontalPodAutoscaler")]:
        out[doc["spec"]["scaleTargetRef"]["name"]] = doc
    return out


@pytest.mark.parametrize("name", BUILDS)
def test_autoscaled_deployments_leave_replicas_to_the_autoscaler(
    built: dict[str, list[Doc]], name: str
) -> None:
    """A replicas field on an autoscaled Deployment resets the count on every apply."""
    docs = built[name]
    targets = _scaled_targets(docs)
    assert (
        len(of_kind(docs, "ScaledObject")) == 0
        or len(of_kind(docs, "HorizontalPodAutoscaler")) == 0
    ), "KEDA and an HPA would fight over the same Deployments"
    for target in targets:
        deployment = named(docs, "Deployment", target)
        assert "replicas" not in deployment["spec"], f"{name}: {target} sets replicas"
        assert {target} < set(CONSUMERS), target


@pytest.mark.parametrize("name", ["base+keda", "overlays/prod"])
def test_keda_reads_the_real_consumers(built: dict[str, list[Doc]], name: str) -> None:
    docs = built[name]
    _, values, _ = _chart_values()
    accounts = values["config"]["merge"]["accounts"]
    monitor_port = values["config"]["monitor"]["port"]
    scaled = of_kind(docs, "ScaledObject")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled} == {"judge", "generator"}
    defaults = ServiceSettings.model_fields
    for obj in scaled:
        target = obj["spec"]["scaleTargetRef"]["name"]
        deployment = named(docs, "Deployment", target)
        assert _process(deployment) == f"services.{target}"
        (trigger,) = obj["spec"]["triggers"]
        assert trigger["type"] == "nats-jetstream"
        meta = trigger["metadata"]
        # The worker binds the durable named after its service on the work stream.
        assert meta["consumer"] == target and target in CONSUMERS
        assert meta["stream"] == WORK_STREAM
        assert meta["account"] in accounts
        assert meta["natsServerMonitoringEndpoint"] == (
            f"nats-headless.{NAMESPACE}.svc.cluster.local:{monitor_port}"
        )
        # Replicas past max_ack_pending / worker_concurrency would get no messages.
        env = config_data(docs, deployment)
        concurrency = int(
            env.get("TAXOFORGE_WORKER_CONCURRENCY", defaults["worker_concurrency"].default)
        )
        ack_pending = int(env.get("TAXOFORGE_MAX_ACK_PENDING", defaults["max_ack_pending"].default))
        assert obj["spec"]["maxReplicaCount"] * concurrency <= ack_pending
        assert int(meta["lagThreshold"]) >= concurrency
        assert obj["spec"]["minReplicaCount"] >= 1, "judge and generator never idle at zero"


def test_keda_may_read_nats_monitoring(built: dict[str, list[Doc]]) -> None:
    docs = built["base+keda"]
    policy = named(docs, "NetworkPolicy", "nats-monitoring-from-keda")
    assert label_selector_matches(policy["spec"]["podSelector"], NATS_POD.labels or {})
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8222}]


def test_prod_keeps_two_of_everything(built: dict[str, list[Doc]]) -> None:
    docs = built["overlays/prod"]
    scaled = _scaled_targets(docs)
    for deployment in _workloads(docs):
        name = deployment["metadata"]["name"]
        replicas = (
            scaled[name]["spec"]["minReplicaCount"]
            if name in scaled
            else deployment["spec"]["replicas"]
        )
        assert replicas >= 2, name
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        assert pdb["spec"] == {**pdb["spec"], "minAvailable": 1}
        assert "maxUnavailable" not in pdb["spec"]


def test_dev_is_one_of_each_on_the_embedded_model(built: dict[str, list[Doc]]) -> None:
    docs = built["overlays/dev"]
    for deployment in _workloads(docs):
        assert deployment["spec"].get("replicas", 1) == 1
    llm = named(docs, "Deployment", "llm")
    server = containers(llm)[0]
    command = server["command"]
    port = int(command[command.index("--port") + 1])
    assert command[command.index("--host") + 1] == "0.0.0.0"
    service = named(docs, "Service", "llm")
    assert [p["port"] for p in service["spec"]["ports"]] == [port]
    assert server["image"].split(":")[0].endswith("taxoforge-embedded")
    judge = named(docs, "Deployment", "judge")
    env = config_data(docs, judge)
    assert env["TAXOFORGE_LLM_API_BASE"] == f"http://llm:{port}/v1"
    alias = command[command.index("--model_alias") + 1]
    assert env["TAXOFORGE_LLM_MODEL"] == f"openai/{alias}"
    assert env["TAXOFORGE_REPLICAS"] == "1"


# ---- NATS ----


def _key_paths(values: Any, defaults: Any, path: str = "") -> list[str]:
    """Keys of ``values`` the chart does not define (free-form maps excepted)."""
    if not isinstance(values, dict):
        return []
    bad = []
    for key, value in values.items():
        here = f"{path}.{key}" if path else key
        if not isinstance(defaults, dict) or key not in defaults:
            bad.append(here)
        elif key in ("merge", "patch", "env", "resources") or defaults[key] == {}:
            continue  # passed through to the config or the pod as it is
        else:
            bad += _key_paths(value, defaults[key], here)
    return bad


def test_nats_values_use_only_the_charts_keys() -> None:
    defaults, values, dev = _chart_values()
    assert _key_paths(values, defaults) == []
    assert _key_paths(dev, defaults) == []


def test_nats_values_keep_state_safe() -> None:
    _, values, dev = _chart_values()
    config = values["config"]
    assert config["jetstream"]["enabled"] is True
    store = config["jetstream"]["fileStore"]
    assert store["enabled"] is True and store["pvc"]["enabled"] is True
    assert config["jetstream"]["merge"]["sync_interval"] == "always"
    assert config["cluster"]["enabled"] is True and config["cluster"]["replicas"] == 3
    dev_config = _merged(values, dev)["config"]
    assert dev_config["jetstream"]["merge"]["sync_interval"] == "always"
    assert dev_config["cluster"]["enabled"] is False


def test_nats_servers_match_the_replicas_taxoforge_asks_for(
    built: dict[str, list[Doc]],
) -> None:
    _, values, dev = _chart_values()
    for name, chart in (("overlays/prod", values), ("overlays/dev", _merged(values, dev))):
        cluster = chart["config"]["cluster"]
        servers = cluster["replicas"] if cluster["enabled"] else 1
        docs = built[name]
        env = config_data(docs, named(docs, "Deployment", "judge"))
        assert int(env["TAXOFORGE_REPLICAS"]) <= servers, name


def test_nats_tls_and_auth_match_the_clients(built: dict[str, list[Doc]]) -> None:
    _, values, _ = _chart_values()
    tls_docs = built["nats/tls"]
    certificates = {c["spec"]["secretName"]: c for c in of_kind(tls_docs, "Certificate")}
    server_secret = values["config"]["nats"]["tls"]["secretName"]
    assert values["config"]["nats"]["tls"]["enabled"] is True
    assert values["tlsCA"] == {"enabled": True, "secretName": server_secret, "key": "ca.crt"}
    server_cert = certificates[server_secret]
    client_cert = certificates["taxoforge-nats-tls"]
    # One CA signs both, so the ca.crt the clients get is the one that signed the server.
    assert server_cert["spec"]["issuerRef"] == client_cert["spec"]["issuerRef"]
    issuer = named(tls_docs, "Issuer", server_cert["spec"]["issuerRef"]["name"])
    assert issuer["spec"]["ca"]["secretName"] in certificates
    assert "server auth" in server_cert["spec"]["usages"]
    assert "client auth" in client_cert["spec"]["usages"]

    docs = built["overlays/prod"]
    for deployment in _workloads(docs):
        env = config_data(docs, deployment)
        scheme, _, hostport = env["TAXOFORGE_NATS_URL"].partition("://")
        host, port = hostport.split(":")
        assert scheme == "tls" and int(port) == values["config"]["nats"]["port"]
        assert host in server_cert["spec"]["dnsNames"]
        ca = Path(env["TAXOFORGE_NATS_TLS_CA_FILE"])
        server = containers(deployment)[0]
        spec = deployment["spec"]["template"]["spec"]
        mount = next(m for m in server["volumeMounts"] if m["mountPath"] == str(ca.parent))
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        assert volume["secret"]["secretName"] == client_cert["spec"]["secretName"]
        assert ca.name == "ca.crt"
        # The processes log in with the same Secret the NATS servers read the user from.
        entries = env_of(server)
        for var, key in (("TAXOFORGE_NATS_USER", "user"), ("TAXOFORGE_NATS_PASSWORD", "password")):
            ref = entries[var]["valueFrom"]["secretKeyRef"]
            chart_ref = values["container"]["env"][var]["valueFrom"]["secretKeyRef"]
            assert ref == chart_ref == {"name": "taxoforge-nats-auth", "key": key}
    (user,) = values["config"]["merge"]["accounts"]["TAXOFORGE"]["users"]
    assert user == {
        "user": "<< $TAXOFORGE_NATS_USER >>",
        "password": "<< $TAXOFORGE_NATS_PASSWORD >>",
    }


def test_nats_components_switch_credentials(built: dict[str, list[Doc]]) -> None:
    for deployment in _workloads(built["base+nats-creds"]):
        env = env_of(containers(deployment)[0])
        assert "TAXOFORGE_NATS_USER" not in env and "TAXOFORGE_NATS_PASSWORD" not in env
        creds = Path(env["TAXOFORGE_NATS_CREDS_FILE"]["value"])
        mounts = {m["mountPath"] for m in containers(deployment)[0]["volumeMounts"]}
        assert str(creds.parent) in mounts
    for deployment in _workloads(built["base+nats-mtls"]):
        env = env_of(containers(deployment)[0])
        for var in ("TAXOFORGE_NATS_TLS_CERT_FILE", "TAXOFORGE_NATS_TLS_KEY_FILE"):
            assert env[var]["value"].startswith("/etc/taxoforge/nats-tls/")


# ---- the README ----


def test_readme_walks_from_zero_to_a_job() -> None:
    readme = (K8S / "README.md").read_text()
    version = re.search(r"chart version (\S+),", CHART_DEFAULTS.read_text())
    assert version is not None
    for needed in (
        "docker build",
        "--target embedded",
        f"--version {version.group(1)}",
        "-f deploy/k8s/nats/values.yaml",
        "kubectl apply -k deploy/k8s/nats/tls",
        "kubectl apply -k deploy/k8s/overlays/prod",
        "kubectl apply -k deploy/k8s/overlays/dev",
        "taxoforge keys new --tenant",
        "POST",
        "/v1/jobs",
        "Authorization: Bearer",
        "scale deployment/judge --replicas=",
        "get scaledobject",
        "get hpa",
    ):
        assert needed in readme, needed
