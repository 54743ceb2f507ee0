"""`fleet hosts ls`: every host with its GPUs, slots in use and health (probed now or last known)."""
from __future__ import annotations

from typing import Any

from ...render import Column, Table
from .hosts import Inventory, fingerprint, probe_all


def host_rows(inventory: Inventory, *, probe: bool = True) -> list[dict[str, Any]]:
    """One dict per host (its stored fields, the key's fingerprint, slots used and free, isolation);
    with `probe`, each host is checked over SSH first and the result recorded."""
    hosts = inventory.list()
    probes = {}
    if probe and hosts:
        inventory.sync_config_hosts(hosts[0].added_by or "unknown")
        probes = probe_all([h for h in hosts if not h.damaged])
        for name, result in probes.items():
            inventory.record_probe(name, result)
        hosts = inventory.list()
    used = inventory.used_slots()
    rows = []
    for h in hosts:
        row = {k: v for k, v in h.to_json().items() if k not in ("host_key", "home")}
        row["host_key_fingerprint"] = fingerprint(h.host_key) if h.host_key else None
        row["slots_used"] = used.get(h.name, [])
        row["slots_free"] = max(0, (h.gpus or 0) - len(row["slots_used"]))
        # Learnt by this probe (not stored): "cgroup" | "pids", None when not probed or down.
        row["isolation"] = probes[h.name].isolation if h.name in probes and probes[h.name].up else None
        rows.append(row)
    return rows


STATUS_STYLE = {"up": "green", "down": "red"}


def hosts_table(rows: list[dict[str, Any]]) -> Table:
    table = Table([Column(c) for c in ("host", "address", "gpus", "used", "status", "isolation", "source",
                                       "detail")], title="fleet hosts",
                  empty="no hosts: add one with `fleet hosts add ADDRESS`, or [[hosts]] in fleet.toml")
    for r in rows:
        address = f"{r['login'] + '@' if r['login'] else ''}{r['address']}{':' + str(r['port']) if r['port'] else ''}"
        gpus = "?" if r["gpus"] is None else str(r["gpus"]) + (f" × {r['gpu_model']}" if r["gpu_model"] else "")
        status = "DOWN" if r["status"] == "down" else r["status"]
        table.add(r["name"], address, gpus, f"{len(r['slots_used'])}/{r['gpus'] or 0}", status,
                  r["isolation"] or "?", r["source"], r["status_detail"] or "",
                  styles=(None, None, None, None, STATUS_STYLE.get(r["status"]), None, None, None))
    return table
