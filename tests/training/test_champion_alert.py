"""Every change of champion (gate, promote, rollback) raises one ``champion_changed`` alert."""

from __future__ import annotations

from etfuse.alerts import read_alert_log
from tests.training.test_registry import home, make_registry, register  # noqa: F401 - fixtures

__all__ = ["home", "make_registry"]


def test_champion_changed_alerts(make_registry, tmp_path):
    registry = make_registry(margin=0.0)
    v1 = register(registry, tmp_path, 1.0, 1.5).version
    v2 = register(registry, tmp_path, 2.0, 1.3).version
    registry.gate(v1, candidate_rmse=1.5, champion_rmse=None, gleam_rmse=3.5, era5land_rmse=2.6, actor="flow:retrain")
    registry.promote(v2, actor="alice@ops", reason="operator override")
    back = registry.rollback(actor="bob@ops", reason="bad maps in the north")
    assert back == v1
    records = [r for r in read_alert_log(registry.settings)
               if r.get("kind") == "champion_changed" and r.get("record") == "alert"
               and r["details"].get("model") == registry.name]
    got = [(r["details"]["action"], r["details"]["previous"], r["details"]["version"], r["details"]["by"])
           for r in records]
    assert got == [("gate", None, v1, "flow:retrain"), ("promote", v1, v2, "alice@ops"), ("rollback", v2, v1, "bob@ops")]
    assert all(r["severity"] == "warning" and r["source"] == "model" for r in records)
    assert "bad maps in the north" in records[-1]["summary"] and f"v{v2} -> v{v1}" in records[-1]["summary"]
