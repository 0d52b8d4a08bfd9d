"""Building deploy/k8s with the pinned kubectl and reading what comes out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
NAMESPACE = "taxoforge"

# What `kubectl kustomize` is run on: every kustomization a user applies, and the base with
# each component alone (a component must build on the base, not only inside prod).
KUSTOMIZATIONS = ("base", "overlays/dev", "overlays/prod", "nats/tls")
COMPONENTS = ("keda", "hpa", "nats-creds", "nats-mtls")
BUILDS = (*KUSTOMIZATIONS, *(f"base+{c}" for c in COMPONENTS))

Doc = dict[str, Any]


def tool(name: str) -> str:
    """A binary the dev extra installs into the venv (kubectl, hadolint)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: `make install` installs it with the dev extra")
    return found


def build(name: str, scratch: Path) -> list[Doc]:
    """``kubectl kustomize`` of one entry of BUILDS, parsed."""
    if "+" in name:
        base, component = name.split("+")
        root = scratch / name
        root.mkdir(parents=True, exist_ok=True)
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": NAMESPACE,
            "resources": [os.path.relpath(K8S / base, root)],
            "components": [os.path.relpath(K8S / "components" / component, root)],
        }
        (root / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    else:
        root = K8S / name
    proc = subprocess.run(
        [tool("kubectl"), "kustomize", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"kubectl kustomize {name} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def containers(deployment: Doc) -> list[Doc]:
    return list(deployment["spec"]["template"]["spec"]["containers"])


def pod_labels(deployment: Doc) -> dict[str, str]:
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def config_data(docs: list[Doc], deployment: Doc) -> dict[str, str]:
    """The environment a Deployment's server container gets as plain values: its ConfigMaps
    (envFrom) overlaid with its literal env entries."""
    values: dict[str, str] = {}
    server = containers(deployment)[0]
    for source in server.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        values.update(named(docs, "ConfigMap", ref)["data"])
    values.update({n: e["value"] for n, e in env_of(server).items() if "value" in e})
    return values


def label_selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes' LabelSelector semantics (matchLabels and matchExpressions)."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def parse_quantity(text: str | int) -> float:
    """A Kubernetes resource quantity in base units (bytes, cores)."""
    s = str(text)
    suffixes = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "m": 1e-3,
    }
    for suffix in sorted(suffixes, key=len, reverse=True):
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * suffixes[suffix]
    return float(s)


@dataclass(frozen=True)
class Peer:
    """A pod in the namespace (labels) or something outside it (labels None)."""

    labels: Mapping[str, str] | None


OUTSIDE = Peer(None)


def _policies(docs: list[Doc], target: Peer, direction: str) -> Iterator[Doc]:
    for policy in of_kind(docs, "NetworkPolicy"):
        spec = policy["spec"]
        if direction not in spec.get("policyTypes", ["Ingress"]):
            continue
        if target.labels is not None and label_selector_matches(spec["podSelector"], target.labels):
            yield policy


def _peer_matches(rule_peers: list[Doc] | None, other: Peer) -> bool:
    if rule_peers is None:  # no from/to: everyone
        return True
    for peer in rule_peers:
        if other.labels is None:
            # Outside the namespace: only a namespaceSelector or ipBlock peer can admit it.
            if "ipBlock" in peer or ("namespaceSelector" in peer and "podSelector" not in peer):
                return True
            continue
        in_namespace = "podSelector" in peer and "namespaceSelector" not in peer
        if in_namespace and label_selector_matches(peer["podSelector"], other.labels):
            return True
    return False


def _port_matches(ports: list[Doc] | None, port: int) -> bool:
    return ports is None or any(p.get("port") in (None, port) for p in ports)


def allowed(docs: list[Doc], src: Peer, dst: Peer, port: int) -> bool:
    """Whether the NetworkPolicies let ``src`` open a TCP connection to ``dst``:``port``
    (egress of the source and ingress of the destination, as a CNI enforces them)."""
    egress = list(_policies(docs, src, "Egress"))
    if egress and not any(
        _peer_matches(rule.get("to"), dst) and _port_matches(rule.get("ports"), port)
        for policy in egress
        for rule in policy["spec"].get("egress", [])
    ):
        return False
    ingress = list(_policies(docs, dst, "Ingress"))
    return not ingress or any(
        _peer_matches(rule.get("from"), src) and _port_matches(rule.get("ports"), port)
        for policy in ingress
        for rule in policy["spec"].get("ingress", [])
    )
