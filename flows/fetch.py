"""The fetch flow: one Prefect task per source; the work itself is etfuse.fetch.run.

The engine retries each download with backoff; a source that still fails with a transient error
(provider down, broken transfers) is tried once more by Prefect after a longer pause, then the
flow fails (and alerts) after every other source has had its turn.
"""

from __future__ import annotations

from datetime import date

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from etfuse.fetch import FetchItem
from etfuse.fetch.run import enabled_sources, run_fetch
from flows.alerting import alert_on_failure
from flows.common import flow_settings

#: fetch errors worth another Prefect attempt (the others repeat the same refusal)
TRANSIENT_KINDS = ("provider_down", "transfer_failed")


class SourceFetchFailed(RuntimeError):
    """A source failed; the message is the fetch error (never a credential)."""


def log_progress(logger):
    """``progress_for`` that logs each file's start, every quarter and its end (no terminal under Prefect)."""
    def progress_for(item: FetchItem):
        state = {"quarter": -1}
        logger.info("fetching %s -> landing/%s/%s%s", item.origin, item.target, item.name,
                    f" ({item.size} bytes)" if item.size else "")

        def update(done: int, total: int | None) -> None:
            if total:
                quarter = min(4, 4 * done // total)
                if quarter > state["quarter"]:
                    state["quarter"] = quarter
                    logger.info("%s: %d%% (%d of %d bytes)", item.name, 25 * quarter, done, total)
        return update
    return progress_for


@task(name="fetch-source", task_run_name="fetch {source}", cache_policy=NO_CACHE)
def fetch_source_task(source: str, config: str | None, home: str | None, since: date | None, until: date | None,
                      dry_run: bool) -> dict:
    settings = flow_settings(config, home)
    logger = get_run_logger()
    report = run_fetch(settings, [source], since=since, until=until, dry_run=dry_run,
                       progress_for=log_progress(logger)).sources[0]
    for item in report.planned if dry_run else []:
        logger.info("would fetch %s -> landing/%s/%s", item.origin, item.target, item.name)
    logger.info("fetch %s: %d fetched%s", source, len(report.fetched),
                f"; {report.error}" if report.error else (f"; {report.skipped}" if report.skipped else ""))
    if report.error_kind in TRANSIENT_KINDS:
        raise SourceFetchFailed(report.error)
    return report.to_json()


@flow(name="fetch", on_failure=[alert_on_failure], on_crashed=[alert_on_failure],
      description="Bring each provider's new files into landing/<source>/ (ERA5-Land, MODIS, GLEAM, remote drops).")
def fetch_flow(sources: list[str] | None = None, config: str | None = None, home: str | None = None,
               since: date | None = None, until: date | None = None, dry_run: bool = False) -> dict:
    settings = flow_settings(config, home)
    names = list(sources) if sources else enabled_sources(settings)
    states = []
    for name in names:
        cfg = getattr(settings.fetch, name)
        retry = fetch_source_task.with_options(retries=1, retry_delay_seconds=cfg.backoff_s * 2 ** (cfg.retries + 1))
        states.append(retry(name, config, home, since, until, dry_run, return_state=True))
    results, failed = [], []
    for name, state in zip(names, states):
        if state.is_completed():
            results.append(state.result())
        else:
            failed.append(name)
            results.append({"source": name, "error": str(state.message)})
    if failed:
        raise SourceFetchFailed(f"fetch failed for {', '.join(failed)}: "
                                + "; ".join(r["error"] for r in results if r.get("error")))
    get_run_logger().info("fetch: %s", ", ".join(f"{r['source']} {len(r['fetched'])}" for r in results) or "no source enabled")
    return {"dry_run": dry_run, "sources": results}
