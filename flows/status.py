"""What ``etfuse status`` (and the demo's last step) report: the state of one ETFUSE_HOME."""

from __future__ import annotations

import json

from etfuse.settings import Settings


def status_lines(s: Settings) -> list[str]:
    """Stored inputs, product days, provisional days, the champion, quarantine and recent alerts, as text."""
    from etfuse.quarantine import quarantined
    from etfuse.store import HarmonisedStore
    from serving.product import ProductStore

    out = [f"ETFUSE_HOME {s.home.resolve()}  region {s.region.name} {s.region.bbox} at {s.region.resolution_deg} deg"]
    summary = HarmonisedStore.of(s).summary() if s.harmonised.exists() else None
    out += ["", "harmonised store:", summary.to_string(index=False) if summary is not None and len(summary) else "  empty"]
    records = ProductStore(s, reconcile=False).records() if s.folder("product").exists() else []
    out += ["", "product:"]
    if records:
        provisional = [r for r in records if r.status == "provisional"]
        models = sorted({r.model_version for r in records})
        out.append(f"  {len(records)} days {records[0].day:%Y-%m-%d}..{records[-1].day:%Y-%m-%d}, last day "
                   f"{records[-1].day:%Y-%m-%d} ({records[-1].status}, model v{records[-1].model_version}); "
                   f"{len(provisional)} provisional; written by model version(s) {models}")
        if provisional:
            out.append(f"  provisional: {', '.join(f'{r.day:%Y-%m-%d}' for r in provisional[-10:])}"
                       + (" ..." if len(provisional) > 10 else ""))
        out.append(f"  files under {s.folder('product').resolve()}")
    else:
        out.append("  no product day yet")
    out += ["", "model:"]
    try:
        from training.registry import ModelRegistry
        champion = ModelRegistry(s).champion()
        out.append(f"  champion v{champion.version} (held-out RMSE "
                   f"{champion.metrics.get('heldout_fused_rmse', float('nan')):.3f} mm/d)" if champion
                   else "  no champion yet")
    except Exception as exc:  # noqa: BLE001 - status reports what it can
        out.append(f"  registry unavailable: {exc}")
    q = quarantined(s) if s.folder("quarantine").exists() else []
    out += ["", f"quarantine: {len(q)} file(s)" + (" (etfuse quarantine list)" if q else "")]
    out += [f"  {item['source']}/{item['file']}: {item['why'][:100]}" for item in q[-5:]]
    log_path = s.folder("alerts") / "alerts.jsonl"
    alerts = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []
    alerts = [a for a in alerts if a.get("record") in ("alert", "digest")]
    out += ["", f"recent alerts ({len(alerts)} in {log_path}):"]
    out += [f"  {a.get('created_at', '')[:19]} {a.get('severity', ''):8} {a.get('source', '')}: "
            f"{a.get('summary', '')[:110]}" for a in alerts[-5:]]
    reports = s.folder("reports") / "index.html"
    if reports.exists():
        out += ["", f"validation reports: {reports.resolve()}"]
    return out
