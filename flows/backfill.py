"""The backfill flow: a date range recomputed in chunks of days on a Dask cluster.

Chunks are contiguous runs of stale days; each chunk builds its own window embeddings (the first
days of a chunk recompute the T-1 days before it), writes its days through the same atomic
product writer, and never shares a day with another chunk, so no two writers touch one file.  The
flow holds the product lock for its chunks and builds the yearly files once at the end.  A day's
result depends only on its window, so the output equals a sequential update of the same days.
"""

from __future__ import annotations

from datetime import date

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.alerting import alert_on_failure
from flows.common import flow_settings


@task(name="backfill-chunk", task_run_name="backfill {start}..{end}", cache_policy=NO_CACHE)
def backfill_chunk(config: str | None, home: str | None, start: date, end: date, threads: int) -> dict:
    """One chunk, run in a Dask worker: everything is rebuilt from plain parameters there."""
    from serving.update import run_update
    from serving.wiring import ServingParts
    settings = flow_settings(config, home)
    settings = settings.model_copy(update={"serving": settings.serving.model_copy(update={"threads": threads})})
    parts = ServingParts(settings, reconcile=False)
    report = run_update(settings, predictor=parts.predictor, product=parts.product,
                        start=pd.Timestamp(start), end=pd.Timestamp(end), build_years=False, lock=False)
    return {"start": f"{start}", "end": f"{end}", "written": report.written, "seconds": sum(report.seconds_per_day),
            "providers": report.providers}


def chunks(days: list[pd.Timestamp], size: int, workers: int = 1) -> list[tuple[date, date]]:
    """Contiguous runs of days cut into pieces of at most ``size`` days, of equal length.

    A run is cut into a multiple of ``workers`` pieces when it is long enough, so the last round of
    a cluster is not one short chunk on one worker while the others wait (measured: 63 days in
    chunks of 15 left a 3-day chunk running alone).
    """
    runs: list[list[pd.Timestamp]] = []
    for day in sorted(days):
        if runs and day - runs[-1][-1] == pd.Timedelta(days=1):
            runs[-1].append(day)
        else:
            runs.append([day])
    out: list[tuple[date, date]] = []
    for run in runs:
        n = -(-len(run) // size)
        if workers > 1 and len(run) >= workers:
            n = -(-n // workers) * workers
        base, extra = divmod(len(run), n)
        k = 0
        for i in range(n):
            piece = run[k:k + base + (i < extra)]
            k += len(piece)
            out.append((piece[0].date(), piece[-1].date()))
    return out


@flow(name="backfill", on_failure=[alert_on_failure], on_crashed=[alert_on_failure],
      description="Recompute the stale product days of a date range in parallel on a Dask cluster (a local one by "
                  "default, an existing scheduler when an address is given).")
def backfill_flow(config: str | None = None, home: str | None = None, start: date | None = None,
                  end: date | None = None, chunk_days: int = 30, threads_per_worker: int = 1,
                  workers: int = 1) -> dict:
    from serving.update import plan_days, product_lock
    from serving.wiring import ServingParts
    from etfuse.store import HarmonisedStore
    logger = get_run_logger()
    settings = flow_settings(config, home)
    parts = ServingParts(settings)
    product = parts.product
    model = parts.predictor.model()
    with product_lock(settings):
        plans = plan_days(settings, HarmonisedStore.of(settings), product, model_version=model.version,
                          window_days=model.window_days, start=start, end=end)
        stale = [p.day for p in plans if p.reason != "up to date"]
        pieces = chunks(stale, chunk_days, workers)
        logger.info("backfill %s..%s with model v%s: %d stale days in %d chunks", start, end, model.version,
                    len(stale), len(pieces))
        futures = [backfill_chunk.submit(config, home, a, b, threads_per_worker) for a, b in pieces]
        results = [f.result() for f in futures]
        years = sorted({d.year for d in stale})
        for year in years:
            product.build_year(year)
    written = {k: v for r in results for k, v in r["written"].items()}
    providers = {k: v for r in results for k, v in r.get("providers", {}).items()}
    if providers:        # which execution provider computed the days (also in each day's file and ledger row)
        logger.info("backfill: days computed on %s", ", ".join(f"{p} ({list(providers.values()).count(p)} days)"
                                                             for p in sorted(set(providers.values()))))
    return {"model_version": model.version, "days": len(written), "chunks": len(pieces), "years_rebuilt": years,
            "written": written, "providers": providers}


def _cluster_workers(address: str | None, workers: int) -> int:
    """Workers the chunks are balanced over: the LocalCluster's, or those of the running scheduler."""
    if not address:
        return workers
    try:
        from distributed import Client
        with Client(address, timeout=10) as client:
            return max(1, len(client.scheduler_info().get("workers", {})))
    except Exception:  # noqa: BLE001 - balancing is an optimisation; the backfill itself reports real errors
        return 1


def _prefect_api_for_workers() -> dict[str, str]:
    """The environment that points a LocalCluster's workers at the Prefect API the flow reports to.

    Dask workers are new processes: without ``PREFECT_API_URL`` in their environment (a local
    ``etfuse backfill``, or a URL set only in the parent's settings) each one started a temporary
    Prefect server of its own, another process and seconds of CPU on the cores that compute the
    days, and recorded its chunks where nobody looks.  When no API is configured, the temporary
    server is started here, before the cluster, and the flow (Prefect reuses it) and every worker
    report to it.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED
    url = PREFECT_API_URL.value()
    if not url and PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        from prefect.server.api.server import SubprocessASGIServer
        server = SubprocessASGIServer()          # the instance Prefect's own client starts and reuses
        server.start()
        url = server.api_url
    return {"PREFECT_API_URL": url} if url else {}


def run_backfill(*, config: str | None, home: str | None, start: date | None, end: date | None,
                 workers: int = 2, address: str | None = None, chunk_days: int = 30, threads_per_worker: int = 1):
    """The backfill flow on a Dask cluster: ``address`` of a running scheduler, else a LocalCluster
    whose workers report to the flow's Prefect API."""
    from prefect_dask import DaskTaskRunner
    runner = (DaskTaskRunner(address=address) if address else
              DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                             "dashboard_address": None, "env": _prefect_api_for_workers()}))
    return backfill_flow.with_options(task_runner=runner)(config=config, home=home, start=start, end=end,
                                                           chunk_days=chunk_days,
                                                           threads_per_worker=threads_per_worker,
                                                           workers=_cluster_workers(address, workers))
