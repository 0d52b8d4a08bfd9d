"""``taxoforge keys``: make API keys for the gateway's tenants file."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from taxoforge.keys import TenantEntry, hash_key, new_key

__all__ = ["add_keys_commands"]


def cmd_keys_new(ns: argparse.Namespace) -> None:
    """Print a new key once; store only its hash (in --file, or printed for you to paste)."""
    key = new_key()
    entry: dict[str, Any] = {"name": ns.tenant, "keys": [hash_key(key)]}
    if ns.rate is not None or ns.burst is not None:
        entry["rate_limit"] = {
            k: v for k, v in (("requests_per_s", ns.rate), ("burst", ns.burst)) if v is not None
        }
    if ns.tokens is not None or ns.cost_usd is not None:
        entry["job_limit"] = {
            k: v for k, v in (("tokens", ns.tokens), ("cost_usd", ns.cost_usd)) if v is not None
        }
    try:  # a bad name or limit fails here, not at the gateway's start
        TenantEntry.model_validate(entry)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    if ns.file:
        _merge(Path(ns.file), entry)
        sys.stderr.write(f"added a key for tenant {ns.tenant!r} to {ns.file}\n")
    else:
        sys.stderr.write("add this to the tenants file (TAXOFORGE_TENANTS_FILE):\n")
        sys.stderr.write(yaml.safe_dump({"tenants": [entry]}, sort_keys=False) + "\n")
    sys.stderr.write("the key (shown once; the file keeps only its hash):\n")
    sys.stdout.write(key + "\n")


def _merge(path: Path, entry: dict[str, Any]) -> None:
    """Add the key to the tenant in the file (creating either), written atomically."""
    document: Any = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    document = document or {"tenants": []}
    tenants = document.setdefault("tenants", [])
    found = next((t for t in tenants if t.get("name") == entry["name"]), None)
    if found is None:
        tenants.append(entry)
    else:
        found.setdefault("keys", []).extend(entry["keys"])
        for part in ("rate_limit", "job_limit"):
            if part in entry:
                found[part] = {**found.get(part, {}), **entry[part]}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tenants-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(document, fh, sort_keys=False)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def add_keys_commands(sub: Any) -> None:
    """Register ``taxoforge keys ...``."""
    p = sub.add_parser("keys", help="API keys of the gateway's tenants")
    keys = p.add_subparsers(dest="keys_command", required=True)
    k = keys.add_parser("new", help="make a key for a tenant (prints it once)")
    k.add_argument("--tenant", required=True, help="the tenant's name (a-z, 0-9, '-')")
    k.add_argument("--file", help="the tenants file to add it to (created if missing)")
    k.add_argument("--rate", type=float, help="requests per second (default 10)")
    k.add_argument("--burst", type=int, help="requests at once (default 40)")
    k.add_argument("--tokens", type=int, help="tokens one job may spend (default: no limit)")
    k.add_argument("--cost-usd", dest="cost_usd", type=float, help="cost one job may spend")
    k.set_defaults(func=cmd_keys_new)
