"""``etfuse demo``: the whole operational story on embedded defaults, in one process.

1. generate a synthetic world over the test region (about 21 months) in the providers' formats and
   fetch its GLEAM and CMA files from a local SFTP server (the providers' side) into landing;
2. ingest its archive, with a few bad deliveries that are quarantined and alerted;
3. train, evaluate and register v1; the gate decides (against the champion and the strongest
   baseline); when it refuses, the demo promotes v1 by hand and says so (it needs a champion to serve);
4. run the update flow over the last month (the product, its yearly file and quicklooks);
5. deliver one more day of data and run the daily flow (ingest, then update);
6. train v2 and show the gate's decision;
7. roll back (after promoting v2 by hand if the gate kept v1) and recompute the days v2 wrote;
8. show status and the model history, and where everything is.

Everything lives under ``$ETFUSE_HOME/demo`` (wiped at the start), with MLflow on a SQLite file
and Prefect's ephemeral API: no server, no network.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import date
from pathlib import Path
from typing import Callable

import netCDF4
from etfuse.settings import Settings, load_settings

#: the synthetic period; the last day's deliveries are held back for the daily run
START, END, EXTRA_DAY = "2020-04-01", "2021-12-31", "2022-01-01"
#: the first day of the product (the update over "the last month")
PRODUCT_START = "2021-12-01"


def _step(echo: Callable[[str], None], k: int, text: str, t0: float) -> None:
    echo(f"\n[{k}/8] {text}  (+{time.perf_counter() - t0:.0f} s)")


def _bad_deliveries(landing: Path, world: Path) -> list[str]:
    """Three deliveries an operator will meet: a truncated download, an empty file, ET in metres."""
    gleam = next((world / "landing" / "gleam").glob("E_2021_*.nc"))
    era5 = sorted((world / "landing" / "era5land").glob("*.nc"))[0]
    (landing / "era5land" / "era5land_202003.nc").write_bytes(era5.read_bytes()[: era5.stat().st_size // 4])
    (landing / "gleam" / "E_2019_GLEAM_v3.7a.nc").write_bytes(b"")
    metres = landing / "gleam" / "E_2021_GLEAM_v3.7a_metres.nc"
    shutil.copy2(gleam, metres)
    with netCDF4.Dataset(metres, "a") as nc:
        nc["E"][:] = nc["E"][:] / 1000.0          # a provider bug: metres labelled mm/day
    return ["era5land/era5land_202003.nc", "gleam/E_2019_GLEAM_v3.7a.nc", "gleam/E_2021_GLEAM_v3.7a_metres.nc"]


def _deliver(world: Path, landing: Path, keep: Callable[[Path], bool]) -> int:
    n = 0
    for path in sorted((world / "landing").glob("*/*")):
        if keep(path):
            target = landing / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            n += 1
    return n


def _held_back(path: Path) -> bool:
    """The last day's deliveries: January's ERA5-Land and CMA files, MODIS of 1 January."""
    name = path.name
    return "202201" in name or "A2022001" in name


def _fetch_from_sftp(world: Path, home: Path, config: Path, echo: Callable[[str], None]) -> int:
    """GLEAM and CMA served by a local SFTP server laid out like the providers' (GLEAM's
    ``/data/<version>/daily/<year>/``, a CMA drop folder), fetched into landing with the ledger."""
    import re
    import secrets

    from etfuse.fetch.ledger import FetchLedger
    from etfuse.fetch.run import run_fetch
    from etfuse.fetch.sftpserver import LocalSftpServer

    served = home / "provider_sftp"
    for path in sorted((world / "landing" / "gleam").glob("*.nc")):
        match = re.match(r"E_(\d{4})_GLEAM_(v[\w.]+)\.nc$", path.name)
        if match and not _held_back(path):
            target = served / "data" / match.group(2) / "daily" / match.group(1) / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
    (served / "cma").mkdir(parents=True)
    for path in sorted((world / "landing" / "cma").iterdir()):
        if not _held_back(path):
            os.link(path, served / "cma" / path.name)
    password = secrets.token_hex(8)
    env_file = home / "provider.env"            # credentials live in .env, never in the settings file
    env_file.write_text(f"GLEAM_SFTP_USERNAME=demo\nGLEAM_SFTP_PASSWORD={password}\n"
                        f"ETFUSE_REMOTE_USERNAME=demo\nETFUSE_REMOTE_PASSWORD={password}\n")
    env_file.chmod(0o600)
    with LocalSftpServer(served, "demo", password, home / "provider_sftp_state") as server:
        common = {"enabled": True, "known_hosts": str(server.known_hosts), "timeout_s": 30}
        s = load_settings(config, home=home, fetch={"env_file": str(env_file),
                                                    "gleam": {"url": server.url, **common},
                                                    "remote": {"url": f"{server.url}/cma", "target": "cma", **common}})
        report = run_fetch(s, ["gleam", "remote"])
        again = run_fetch(s, ["gleam", "remote"])
    for source in report.sources:
        if source.error:
            raise RuntimeError(f"demo fetch failed: {source.error}")
        size = sum(r.size for r in source.fetched) / 1e6
        echo(f"      fetch {source.source}: {len(source.fetched)} file(s), {size:.1f} MB from {server.url} "
             f"into landing/{source.fetched[0].target}/" if source.fetched else f"      fetch {source.source}: nothing")
    ledger = FetchLedger.of(s)
    rows = ledger.rows()
    echo(f"      fetch ledger {ledger.path}: {len(rows)} files, e.g. {rows[0].name} sha256 {rows[0].sha256[:12]} "
         f"from {rows[0].origin}")
    echo(f"      fetched again: {sum(len(x.fetched) for x in again.sources)} new file(s) (the ledger knows the rest)")
    return sum(len(x.fetched) for x in report.sources)


def run_demo(settings: Settings, *, echo: Callable[[str], None] = print) -> dict:
    from etfuse.ingest import ingest_all
    from etfuse.synth.world import WorldSpec, generate
    from flows.daily import daily_flow
    from flows.retrain import retrain_flow
    from flows.rollback import rollback_flow
    from flows.update import update_flow
    from training.registry import ModelRegistry

    t0 = time.perf_counter()
    home = (settings.home / "demo").resolve()
    if home.exists():
        shutil.rmtree(home)
    world = home / "world"
    r = settings.region
    config = home / "etfuse.yaml"
    home.mkdir(parents=True)
    config.write_text(json.dumps({
        "home": str(home), "region": r.name if r.name in ("test", "qinghai") else r.model_dump(),
        "static": {"elevation_file": str(world / "static" / "elevation.nc")},
        "training": {"epochs": 15, "patience": 4},
        # the operational product starts with the last month: daily runs never recompute the archive
        "serving": {"first_day": PRODUCT_START}}))
    # ``home`` passed explicitly everywhere: an ETFUSE_HOME in the environment outranks the config file
    s = load_settings(config, home=home)
    s.ensure_folders()
    run = {"config": str(config), "home": str(home)}

    _step(echo, 1, f"fetch: a synthetic world {START}..{EXTRA_DAY} over {r.bbox} plays the providers (truth kept "
                   f"apart in {world / 'truth'}); GLEAM and CMA are fetched from its SFTP server", t0)
    generate(world, WorldSpec(bbox=r.bbox, start=START, end=EXTRA_DAY, resolution_deg=r.resolution_deg, seed=42,
                              margin_deg=r.margin_deg))
    landing = s.folder("landing")
    fetched = _fetch_from_sftp(world, home, config, echo)
    n = fetched + _deliver(world, landing, lambda p: not _held_back(p) and p.parent.name not in ("gleam", "cma"))
    bad = _bad_deliveries(landing, world)
    echo(f"      {n} provider files in {landing} ({fetched} fetched, the rest copied), plus {len(bad)} bad deliveries: "
         f"{', '.join(bad)}")

    _step(echo, 2, "ingest the archive: validate every file (Great Expectations), accept or quarantine", t0)
    report = ingest_all(s, today=date(2022, 1, 5))
    counts = report.counts()
    quarantined = [f"{o.source}/{o.file}" for o in report.outcomes if o.status == "quarantined"]
    echo(f"      {counts}; quarantined: {', '.join(quarantined)}")
    alerts = [json.loads(line) for line in (s.folder("alerts") / "alerts.jsonl").read_text().splitlines()]
    for a in [a for a in alerts if a.get("record") == "alert" and a["severity"] == "critical"][:3]:
        echo(f"      alert {a['severity']}: {a['summary'][:120]}")

    _step(echo, 3, "train v1 on everything accepted, evaluate on held-out stations, register, gate", t0)
    v1 = retrain_flow(**run, actor="demo")
    echo(v1["table"])
    echo(f"      {v1['decision']}")
    registry = ModelRegistry(s)
    if not v1["promoted"]:
        registry.promote(v1["version"], actor="demo", reason="demo: first model")
        echo(f"      v{v1['version']} promoted by hand: the demo needs a champion to serve (the gate's refusal stays "
             "recorded on the version)")

    _step(echo, 4, "update flow over the last month: the product, yearly file and quicklooks", t0)
    month = update_flow(**run, since=date.fromisoformat(PRODUCT_START))
    echo(f"      {month['summary']}")

    _step(echo, 5, f"one more day of data arrives ({EXTRA_DAY}); the daily flow ingests it and updates", t0)
    _deliver(world, landing, _held_back)
    daily = daily_flow(**run, today=date(2022, 1, 5))
    echo(f"      ingest {daily['ingest']['counts']}; {daily['update']['summary']}")

    _step(echo, 6, "train v2 with the new day included and let the gate decide", t0)
    v2 = retrain_flow(**run, actor="demo")
    echo(f"      {v2['decision']}")

    _step(echo, 7, "roll back to v1: the newest product days first, then the history", t0)
    if not v2["promoted"]:
        registry.promote(v2["version"], actor="demo operator", reason="demo: promoted by hand to show a rollback")
        update_flow(**run, since=date.fromisoformat(PRODUCT_START))
    back = rollback_flow(**run, to=v1["version"], reason="demo: back to v1", actor="demo operator")
    echo(f"      champion v{back['from']} -> v{back['to']}; {back.get('summary', '')}")
    if back.get("history"):
        echo(f"      then, behind the newest days: {back['history']}")

    _step(echo, 8, "status, history and where things are", t0)
    from flows.status import status_lines
    from serving.product import ProductStore
    for line in status_lines(s):
        echo(f"      {line}")
    echo("\n      model history (who made which version champion, when and why):")
    product = ProductStore(s)
    records = product.records()
    history = registry.history()
    for h in history:
        echo(f"      v{h.version} champion from {h.start:%H:%M:%S}"
             + (f" until {h.end:%H:%M:%S}" if h.end else " (now)") + f": {h.action} by {h.set_by}: {h.reason}")
    where = {"product": s.folder("product"), "yearly file": product.year_path(2021),
             "quicklooks": s.folder("product") / "quicklooks", "validation reports": s.folder("reports") / "index.html",
             "alerts": s.folder("alerts") / "alerts.jsonl", "quarantine": s.folder("quarantine"),
             "MLflow": s.folder("mlflow"), "config": config}
    for name, path in where.items():
        echo(f"      {name:<19} {path}")
    provisional = sum(r.status == "provisional" for r in records)
    echo(f"\nsummary: {len(records)} product days ({records[0].day:%Y-%m-%d}..{records[-1].day:%Y-%m-%d}, "
         f"{provisional} provisional), champion v{registry.champion().version}; held-out station skill of v1:")
    echo(v1["table"])
    echo(f"demo finished in {time.perf_counter() - t0:.0f} s; `ETFUSE_HOME={home} etfuse -c {config} status` shows it again")
    return {"v1": v1, "v2": v2, "rollback": back, "product_days": len(records), "quarantined": quarantined,
            "seconds": time.perf_counter() - t0}
