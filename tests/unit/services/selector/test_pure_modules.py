"""The selector's logic modules import neither NATS nor gRPC, so they are tested alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE = [
    "services.selector.methods.select",
    "services.selector.methods.clusters",
    "services.selector.methods.quotas",
    "services.selector.choice",
    "services.selector.cluster_plan",
    "services.selector.fetch",
    "services.selector.benchmarks",
    "services.selector.imports",
    "services.selector.exports",
    "services.selector.card",
]


@pytest.mark.parametrize("module", PURE)
def test_a_logic_module_imports_no_bus_or_rpc(module: str) -> None:
    code = f"import sys, {module}\nprint(' '.join(m for m in ('nats', 'grpc') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""
