"""The model lifecycle: the gate, promotion by hand, rollback, and the champion's history."""

from __future__ import annotations

import contextlib
import json
import logging
import uuid

from etfuse.alerts import Alert, AlertDispatcher
from etfuse.clock import utcnow
from training.gate import GateDecision, evaluate_gate
from training.registry.client import _fmt_float, _key, _parse_time
from training.registry.records import (CHALLENGER, CHAMPION, EVENT_PREFIX, GATE_PREFIX, TAG_HELDOUT, TAG_ROLLED_BACK,
                                       HistoryEntry, RegistryError)

log = logging.getLogger(__name__)


class Lifecycle:
    """Mixin of ModelRegistry: gate, promote, rollback and history of the ``champion`` alias."""

    # -- gate, promotion, rollback --------------------------------------------------------------
    def gate(self, v: int, *, candidate_rmse: float, champion_rmse: float | None, gleam_rmse: float,
             era5land_rmse: float, actor: str, heldout_sha256: str | None = None,
             candidate_predictions=None, comparisons=()) -> GateDecision:
        """Decide whether version ``v`` replaces the champion (training/gate.py), record the decision,
        the numbers and the reasons as ``etfuse.gate.*`` tags on ``v``, and promote it when it passes.

        All RMSEs [mm/day] must come from the same held-out station-days.  ``champion_rmse`` is the
        current champion scored on them; it may be None only when there is no champion yet.  When
        ``heldout_sha256`` (heldout_fingerprint of the days the numbers come from) is given, it must
        equal the fingerprint recorded from ``v``'s run, else the gate fails.  When
        ``candidate_predictions`` (the candidate's ET on the held-out station-days) is given, any
        NaN or negative value fails the gate (training.gate.check_predictions), and so does a
        constant.  ``comparisons`` (training.gate.Comparison: paired RMSE differences with the
        champion and the strongest baseline, with 95 % block-bootstrap intervals) must each lie
        entirely below 0; they are recorded as ``etfuse.gate.vs.<reference>`` tags.
        """
        info = self.version(v)
        champion = self.alias_version(CHAMPION)
        if champion == info.version:
            raise RegistryError(f"version {v} is already the champion of {self.name!r}; nothing to gate")
        if champion is not None and champion_rmse is None:
            raise RegistryError(f"version {champion} is the champion of {self.name!r}: pass its RMSE on the same "
                                f"held-out station-days as champion_rmse")
        recorded = info.tags.get(TAG_HELDOUT)
        matches = None if heldout_sha256 is None or recorded is None else heldout_sha256 == recorded
        checks = evaluate_gate(candidate_rmse, champion_rmse, gleam_rmse, era5land_rmse, margin_mm=self.margin_mm,
                               champion_version=champion, heldout_matches=matches,
                               candidate_predictions=candidate_predictions, comparisons=comparisons)
        decision = GateDecision(
            version=info.version, promoted=all(c.passed for c in checks), candidate_rmse=float(candidate_rmse),
            champion_rmse=None if champion_rmse is None else float(champion_rmse), champion_version=champion,
            gleam_rmse=float(gleam_rmse), era5land_rmse=float(era5land_rmse), margin_mm=self.margin_mm,
            checks=tuple(checks), actor=actor, decided_at=utcnow(), heldout_sha256=heldout_sha256 or recorded)
        tags = {
            "decision": decision.decision,
            "candidate_rmse": _fmt_float(decision.candidate_rmse),
            "champion_rmse": "none" if decision.champion_rmse is None else _fmt_float(decision.champion_rmse),
            "champion_version": "none" if champion is None else str(champion),
            "gleam_rmse": _fmt_float(decision.gleam_rmse),
            "era5land_rmse": _fmt_float(decision.era5land_rmse),
            "margin_mm": _fmt_float(decision.margin_mm),
            "reasons": "\n".join(decision.reasons),
            "checks": json.dumps([{"name": c.name, "passed": c.passed, "text": c.text} for c in checks]),
            "by": actor,
            "at": decision.decided_at.isoformat(),
            "heldout_sha256": decision.heldout_sha256 or "none",
            **{f"vs.{_key(c.reference)}": f"{c.diff:+.4f} [{c.lo:+.4f}, {c.hi:+.4f}]" for c in comparisons},
        }
        for key, value in tags.items():  # recorded before any alias moves: the decision survives a crash
            self._call(self.client.set_model_version_tag, self.name, str(info.version), GATE_PREFIX + key, value)
        if decision.promoted:
            self._set_champion(info.version, action="gate", actor=actor, reason=decision.summary())
        log.info("gate: %s", decision.summary())
        return decision

    def promote(self, v: int, *, actor: str, reason: str) -> None:
        """Make version ``v`` the champion by hand (no gate); recorded in the history."""
        info = self.version(v)
        if self.alias_version(CHAMPION) == info.version:
            raise RegistryError(f"version {v} is already the champion of {self.name!r}")
        self._set_champion(info.version, action="promote", actor=actor, reason=reason)

    def rollback(self, *, to: int | None = None, actor: str, reason: str) -> int:
        """Move ``champion`` back: to version ``to``, or (None) to the latest earlier champion that has
        not itself been rolled back.  The version rolled back from is tagged ``etfuse.rolled_back``
        so repeated rollbacks walk further back.  Returns the new champion."""
        current = self.alias_version(CHAMPION)
        if current is None:
            raise RegistryError(f"registered model {self.name!r} has no champion to roll back from")
        if to is None:
            target = self._previous_champion(current)
            if target is None:
                raise RegistryError(f"no earlier champion of {self.name!r} to roll back to from version {current} "
                                    f"(see `etfuse models history`); give one with --to")
        else:
            target = self.version(to).version
            if target == current:
                raise RegistryError(f"version {target} is already the champion of {self.name!r}")
        now = utcnow().isoformat()
        for key, value in ((TAG_ROLLED_BACK, "true"), ("etfuse.rolled_back.at", now), ("etfuse.rolled_back.by", actor),
                           ("etfuse.rolled_back.reason", reason), ("etfuse.rolled_back.to", str(target))):
            self._call(self.client.set_model_version_tag, self.name, str(current), key, value)
        self._set_champion(target, action="rollback", actor=actor, reason=reason, previous=current)
        return target

    def _previous_champion(self, current: int) -> int | None:
        infos = {i.version: i for i in self.versions()}
        for entry in reversed(self._events()):
            v = entry["version"]
            if v != current and v in infos and not infos[v].rolled_back:
                return v
        return None

    def _set_champion(self, v: int, *, action: str, actor: str, reason: str, previous: int | None = None) -> None:
        """Move the alias, then record the event (append-only, unique key) and mirror it on versions."""
        if previous is None:
            previous = self.alias_version(CHAMPION)
        self._call(self.client.set_registered_model_alias, self.name, CHAMPION, str(v))
        at = utcnow()
        key = f"{EVENT_PREFIX}{at:%Y%m%dT%H%M%S%fZ}.{uuid.uuid4().hex[:8]}"
        event = {"version": v, "previous": previous, "at": at.isoformat(), "action": action, "by": actor,
                 "reason": reason}
        self._call(self.client.set_registered_model_tag, self.name, key, json.dumps(event))
        mirror = {"etfuse.champion.from": at.isoformat(), "etfuse.champion.set_by": actor,
                  "etfuse.champion.action": action, "etfuse.champion.reason": reason[:5000]}
        for k, value in mirror.items():
            self._call(self.client.set_model_version_tag, self.name, str(v), k, value)
        with contextlib.suppress(Exception):  # it may never have been rolled back
            self.client.delete_model_version_tag(self.name, str(v), TAG_ROLLED_BACK)
        if previous is not None and previous != v:
            self._call(self.client.set_model_version_tag, self.name, str(previous), "etfuse.champion.until",
                       at.isoformat())
        if self.alias_version(CHALLENGER) == v:
            self._call(self.client.delete_registered_model_alias, self.name, CHALLENGER)
        log.info("%s: champion is now version %d (%s by %s; was %s): %s", self.name, v, action, actor, previous,
                 reason)
        self._announce_champion(event)

    def _announce_champion(self, event: dict) -> None:
        """A ``champion_changed`` alert: every promotion (gate or by hand) and rollback passes here, so
        people learn that the product's model changed, by whom and why.  Never raises: the alias has moved."""
        if event["previous"] == event["version"]:
            return
        try:
            dispatcher = AlertDispatcher(self.settings)
            was = "none" if event["previous"] is None else f"v{event['previous']}"
            dispatcher.send(Alert(
                severity="warning", source="model", kind="champion_changed", checks=[event["action"]],
                summary=(f"{self.name}: champion {was} -> v{event['version']} ({event['action']} by {event['by']}): "
                         f"{event['reason']}"),
                details={**event, "model": self.name}))
            dispatcher.flush()
        except Exception as exc:  # noqa: BLE001 - an alert problem must not undo or fail a promotion
            log.warning("champion_changed alert not sent: %s: %s", type(exc).__name__, exc)

    # -- history ----------------------------------------------------------------------------
    def _events(self) -> list[dict]:
        rm = self._registered_model()
        events = []
        for key, value in (rm.tags or {}).items():
            if not key.startswith(EVENT_PREFIX):
                continue
            try:
                event = json.loads(value)
                event["version"] = int(event["version"])
                event["_at"] = _parse_time(event["at"])
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring an unreadable champion event %s=%r", key, value)
                continue
            event["_key"] = key
            events.append(event)
        events.sort(key=lambda e: (e["_at"], e["_key"]))
        return events

    def history(self) -> list[HistoryEntry]:
        """Champion periods, oldest first: which version, from when until when, set by whom, why."""
        events = self._events()
        live = self.alias_version(CHAMPION) if events else None
        entries = []
        for i, e in enumerate(events):
            end = events[i + 1]["_at"] if i + 1 < len(events) else None
            entries.append(HistoryEntry(version=e["version"], start=e["_at"], end=end, action=e.get("action", "?"),
                                        set_by=e.get("by", "?"), reason=e.get("reason", ""),
                                        previous=e.get("previous"), current=end is None and e["version"] == live,
                                        event_key=e["_key"]))
        return entries
