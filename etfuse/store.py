"""The harmonised store: per-source daily data on native grids, appendable by day, idempotent.

Layout under ``$ETFUSE_HOME/harmonised``::

    ledger.sqlite                          what arrived when, from which file, every revision
                                           (etfuse/store_ledger.py)
    grids/<source>/<YYYY>/<source>_<YYYY-MM-DD>.nc   the current version of a day (one file per day)
    grids/<source>/revisions/<source>_<YYYY-MM-DD>.r<N>.nc   superseded versions, never deleted

Station observations live in the ledger (table ``station_obs``, one row per source, station and
day; superseded rows in ``station_obs_history``).

Rules:
* A day file is written to a temporary name and renamed, so a reader sees the old or the new
  version, never half of one.  The files are the truth: idempotency compares content hashes read
  from the stored file, so a crash between the rename and the ledger update cannot make a day
  look unchanged when it is not; a put that finds a day file its ledger does not know (a crash
  between the rename and the ledger rows) adds the missing rows (``recovered``).
* The same content twice stores once (``unchanged``).  New variables for a stored day (e.g. the
  00 UTC ERA5-Land step arriving in the next month's file) extend it (``extended``).  Different
  content for a stored variable is a ``revised`` day: the old file is kept under revisions/ and the
  ledger records time, file name and file hash of both.
* Preliminary ERA5T never replaces final ERA5-Land: a late ERA5T delivery for a day already stored
  as final leaves that day as it is (``superseded``); the delivery is still recorded.  Final data
  identical to the stored ERA5T (the usual case) rewrites the day's stream to final
  (``finalised``, a new ledger version with the same hash), so the day can become final.
* A gridded delivery is checked day by day before anything is written: one the store refuses
  (StoreError) leaves it untouched.
* Temporary files of writers that died (etfuse.tempfiles) are removed when a store is opened on
  the same host (or when older than a day, whoever wrote them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.cf import annotate
from etfuse.errors import StoreError
from etfuse.ledgerdb import create_ledger, read_frame, schema_name
from etfuse.settings import Settings
from etfuse.store_ledger import _SCHEMA, StoreLedger, _now
from etfuse.tempfiles import remove_orphaned, temporary_name

log = logging.getLogger(__name__)

#: ``superseded``: the day was left as stored because the delivery would put preliminary ERA5T over final
#: ERA5-Land (a late ERA5T file); ``finalised``: the same content, now from final ERA5-Land instead of
#: ERA5T (the day's stream changes, not its values); see HarmonisedStore._plan_grid_day
Action = Literal["new", "extended", "revised", "unchanged", "superseded", "finalised"]
#: A day assembled from pieces (MODIS tiles, etfuse/mosaic.py): given the stored day (or None) and the
#: incoming one, returns the day to store and what it did (``new``/``extended``/``revised``/``unchanged``),
#: or ``(incoming, None)`` to leave the whole-day rules in charge.
Combine = Callable[[xr.Dataset | None, xr.Dataset], tuple[xr.Dataset, str | None]]



@dataclass
class DayChange:
    """What one put did to one day of one source."""

    source: str
    day: pd.Timestamp
    action: Action
    variables: list[str] = field(default_factory=list)
    #: variables (grids) or station ids (stations) whose stored content changed
    changed: list[str] = field(default_factory=list)
    #: grid variables not stored because they would replace final ERA5-Land with preliminary ERA5T
    superseded: list[str] = field(default_factory=list)
    #: grid variables whose content was already stored as ERA5T and is now confirmed by final data
    finalised: list[str] = field(default_factory=list)


@dataclass
class _GridDayPlan:
    """What storing one day of a gridded delivery would do (HarmonisedStore._plan_grid_day)."""

    day: pd.Timestamp
    path: Path
    variables: list[str]
    incoming: dict[str, str]
    per_day_attrs: dict[str, str]
    changed: list[str]
    revised: list[str]
    superseded: list[str]
    same_grid: bool
    exists: bool
    finalised: list[str] = field(default_factory=list)
    #: the day to write (the incoming day, or the incoming day combined with the stored one)
    data: xr.Dataset | None = None


_STALE_TMP_SECONDS = 24 * 3600


def content_sha256(values: np.ndarray, lat: np.ndarray | None = None, lon: np.ndarray | None = None) -> str:
    """Hash of a float field and its grid; NaNs hash alike whatever their bit pattern."""
    h = hashlib.sha256()
    arr = np.ascontiguousarray(values, dtype=np.float32)
    arr = np.where(np.isnan(arr), np.float32(np.nan), arr)
    h.update(str(arr.shape).encode())
    h.update(arr.tobytes())
    for axis in (lat, lon):
        if axis is not None:
            h.update(np.ascontiguousarray(np.round(axis, 6), dtype=np.float64).tobytes())
    return h.hexdigest()


class HarmonisedStore(StoreLedger):
    """Per-source daily harmonised data; see the module docstring for layout and rules."""

    def __init__(self, root: Path, *, ledger_url: str | None = None) -> None:
        self.root = Path(root)
        self.ledger_url = ledger_url
        self.root.mkdir(parents=True, exist_ok=True)
        create_ledger(ledger_url, self.root / "ledger.sqlite", schema_name("store", self.root), _SCHEMA)
        #: day files half-written by writers that died, removed now
        self.removed_temp_files = remove_orphaned((self.root / "grids").glob("*/*/.*.tmp"),
                                                  stale_seconds=_STALE_TMP_SECONDS)

    @classmethod
    def of(cls, settings: Settings) -> "HarmonisedStore":
        """The store of ``settings``: its folder and its ledger (PostgreSQL when ``ledger.url`` is
        set), so no caller can open the folder with the wrong ledger."""
        return cls(settings.harmonised, ledger_url=settings.ledger.url)

    # ------------------------------------------------------------------ grids
    def day_path(self, source: str, day: pd.Timestamp) -> Path:
        day = pd.Timestamp(day)
        return self.root / "grids" / source / f"{day:%Y}" / f"{source}_{day:%Y-%m-%d}.nc"

    def put_grid(self, source: str, ds: xr.Dataset, *, file_name: str | None = None,
                 file_sha256: str | None = None, combine: Combine | None = None) -> list[DayChange]:
        """Store every day of a reader's gridded output; returns what happened to each day.

        Every day is checked before any is written: a delivery the store refuses (StoreError)
        leaves the store as it was, even when its first days would have fitted.  ``combine``
        merges a partial day (one MODIS tile) into the stored one instead of replacing it.
        """
        if "time" not in ds.dims:
            raise StoreError(f"{source}: expected a dataset with a 'time' dimension, found dims {dict(ds.sizes)}")
        days = [ds.isel(time=[k]) for k in range(ds.sizes["time"])]
        plans = [self._plan_grid_day(source, day_ds, combine) for day_ds in days]
        # one writer per store (the ingest lock), so the plans still hold when the days are written
        return [self._put_grid_day(source, day_ds, file_name, file_sha256, combine, plan)
                for day_ds, plan in zip(days, plans)]

    @staticmethod
    def _variables_present(day_ds: xr.Dataset) -> list[str]:
        present = []
        for name in day_ds.data_vars:
            flag = f"has_{name}"
            if flag in day_ds.coords:
                if bool(day_ds[flag].values[0]):
                    present.append(str(name))
            elif np.isfinite(day_ds[name].values).any():
                present.append(str(name))
        return present

    @staticmethod
    def _stored_meta(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, str | None], dict[str, str | None]]:
        """A stored day's grid and, per variable, its content hash and ERA5 stream (no data read)."""
        with xr.open_dataset(path, engine="netcdf4") as ds:
            return (ds["lat"].values, ds["lon"].values,
                    {str(v): ds[v].attrs.get("sha256") for v in ds.data_vars},
                    {str(v): ds[v].attrs.get("era5_stream") for v in ds.data_vars})

    def _plan_grid_day(self, source: str, day_ds: xr.Dataset, combine: Combine | None = None) -> _GridDayPlan:
        """What storing one day would do; raises StoreError (before anything is written) if it cannot."""
        day = pd.Timestamp(day_ds["time"].values[0])
        combined: str | None = None
        if combine is not None:
            path = self.day_path(source, day)
            day_ds, combined = combine(self._read_day_file(path) if path.exists() else None, day_ds)
        variables = self._variables_present(day_ds)
        path = self.day_path(source, day)
        if not variables:
            return _GridDayPlan(day, path, [], {}, {}, [], [], [], True, False)
        lat, lon = day_ds["lat"].values, day_ds["lon"].values
        per_day_attrs = {str(c): str(day_ds[c].values[0]) for c in day_ds.coords
                         if day_ds[c].dims == ("time",) and not str(c).startswith("has_") and c != "time"}
        incoming = {v: content_sha256(day_ds[v].values, lat, lon) for v in variables}
        exists = path.exists()
        if exists:
            s_lat, s_lon, stored_sha, stored_stream = self._stored_meta(path)
            same_grid = (s_lat.size == lat.size and s_lon.size == lon.size
                         and np.allclose(s_lat, lat) and np.allclose(s_lon, lon))
        else:
            s_lat, s_lon, stored_sha, stored_stream, same_grid = None, None, {}, {}, True
        changed = [v for v in variables if stored_sha.get(v) != incoming[v]]
        # preliminary ERA5T never replaces final ERA5-Land: a late ERA5T file keeps the final day
        superseded = [v for v in changed if v in stored_sha and per_day_attrs.get("era5_stream") == "ERA5T"
                      and stored_stream.get(v) == "final"]
        changed = [v for v in changed if v not in superseded]
        written = [v for v in variables if v not in superseded]
        # the same content, now confirmed by the final stream (ERA5T becomes final ERA5-Land unchanged)
        finalised = [v for v in written if v in stored_sha and v not in changed
                     and per_day_attrs.get("era5_stream") == "final" and stored_stream.get(v) != "final"]
        if changed and not same_grid and set(stored_sha) - set(written):
            raise StoreError(
                f"{source} {day:%Y-%m-%d}: the grid changed (stored {s_lat.size}x{s_lon.size}, "
                f"incoming {lat.size}x{lon.size}) but the delivery does not replace every stored variable "
                f"({sorted(stored_sha)}); deliver all variables on the new grid")
        if combined in ("extended", "revised") and not changed:
            changed = list(written)              # a cloud-covered tile: same values, but the day's tile record grows
        revised = [v for v in changed if v in stored_sha] if combined != "extended" else []
        return _GridDayPlan(day, path, variables, incoming, per_day_attrs, changed, revised, superseded,
                            same_grid, exists, finalised, day_ds)

    def _put_grid_day(self, source: str, day_ds: xr.Dataset, file_name: str | None,
                      file_sha256: str | None, combine: Combine | None = None,
                      plan: _GridDayPlan | None = None) -> DayChange:
        plan = plan or self._plan_grid_day(source, day_ds, combine)
        day_ds = plan.data if plan.data is not None else day_ds
        day, path, variables = plan.day, plan.path, plan.variables
        if not plan.changed and not plan.finalised:
            self._repair_ledger(source, plan, file_name, file_sha256)
            return DayChange(source, day, "superseded" if plan.superseded else "unchanged", variables,
                             superseded=plan.superseded)
        lat, lon = day_ds["lat"].values, day_ds["lon"].values
        stored = self._read_day_file(path) if plan.exists else None
        merged = xr.Dataset(coords={"time": [day], "lat": lat, "lon": lon})
        written = [v for v in variables if v not in plan.superseded]
        if stored is not None and plan.same_grid:
            for v in stored.data_vars:
                if v not in written:
                    merged[v] = stored[v].load()
        for v in written:
            da = day_ds[v].astype(np.float32).load()
            da.attrs = {**da.attrs, **plan.per_day_attrs, "sha256": plan.incoming[v],
                        "source_file": file_name or "", "source_file_sha256": file_sha256 or ""}
            merged[v] = da.drop_vars([c for c in da.coords if c not in ("time", "lat", "lon")])
        merged = annotate(merged, source=source, title=f"etfuse harmonised {source} {day:%Y-%m-%d}")
        revision = self._revision(source, day) + 1 if stored is not None else 0
        if stored is not None and plan.revised:
            keep = path.parent.parent / "revisions" / f"{path.stem}.r{revision - 1}.nc"
            keep.parent.mkdir(parents=True, exist_ok=True)
            if not keep.exists():
                os.link(path, keep)
        self._write_atomic(merged, path)
        stream = plan.per_day_attrs.get("era5_stream")
        stored_vars = set(stored.data_vars) if stored is not None else set()
        if plan.revised:
            action: Action = "revised"
        elif plan.changed:
            action = "extended" if stored is not None else "new"
        else:
            action = "finalised"
        with self._db() as db:
            db.executemany(
                "INSERT OR REPLACE INTO grid_versions VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(source, f"{day:%Y-%m-%d}", v, revision, plan.incoming[v], stream,
                  "revised" if v in plan.revised else "finalised" if v in plan.finalised
                  else ("new" if v not in stored_vars else "extended"),
                  file_name, file_sha256, _now()) for v in plan.changed + plan.finalised])
        return DayChange(source, day, action, variables, plan.changed, superseded=plan.superseded,
                         finalised=plan.finalised)

    def _repair_ledger(self, source: str, plan: _GridDayPlan, file_name: str | None, file_sha256: str | None) -> None:
        """The day file is the truth: a writer killed between the file's rename and its ledger rows
        left the day on disk but not in the ledger (which update's fingerprints read); add them."""
        key = f"{plan.day:%Y-%m-%d}"
        with self._db() as db:
            latest = dict(db.execute(
                "SELECT variable, sha256 FROM grid_versions g WHERE source=? AND day=? AND revision="
                "(SELECT MAX(revision) FROM grid_versions WHERE source=g.source AND day=g.day AND variable=g.variable)",
                (source, key)).fetchall())
            missing = [v for v in plan.variables if v not in plan.superseded and latest.get(v) != plan.incoming[v]]
            if not missing:
                return
            revision = db.execute("SELECT COALESCE(MAX(revision), -1) FROM grid_versions WHERE source=? AND day=?",
                                  (source, key)).fetchone()[0]
            log.warning("%s %s: the day file holds %s but the ledger does not (a writer was interrupted); "
                        "ledger repaired", source, key, missing)
            db.executemany(
                "INSERT OR REPLACE INTO grid_versions VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(source, key, v, max(int(revision), 0) + (v in latest), plan.incoming[v],
                  plan.per_day_attrs.get("era5_stream"), "recovered", file_name, file_sha256, _now())
                 for v in missing])

    def _revision(self, source: str, day: pd.Timestamp) -> int:
        with self._db() as db:
            row = db.execute("SELECT MAX(revision) FROM grid_versions WHERE source=? AND day=?",
                             (source, f"{day:%Y-%m-%d}")).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    @staticmethod
    def _read_day_file(path: Path) -> xr.Dataset:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            return ds.load()

    @staticmethod
    def _write_atomic(ds: xr.Dataset, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_name(path)
        encoding = {v: {"zlib": True, "complevel": 4, "_FillValue": np.float32(np.nan)} for v in ds.data_vars}
        encoding["time"] = {"units": "days since 1970-01-01", "dtype": "int32"}
        try:
            ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    def grid_days(self, source: str) -> list[pd.Timestamp]:
        """Days stored for a gridded source, from the files themselves."""
        folder = self.root / "grids" / source
        name = re.compile(rf"^{re.escape(source)}_(\d{{4}}-\d{{2}}-\d{{2}})\.nc$")
        days = [pd.Timestamp(m.group(1)) for p in folder.glob("[0-9][0-9][0-9][0-9]/*.nc") if (m := name.match(p.name))]
        return sorted(days)

    def open_grid(self, source: str, start: str | pd.Timestamp | None = None,
                  end: str | pd.Timestamp | None = None, variables: Sequence[str] | None = None) -> xr.Dataset:
        """Lazily open the stored days of a source in [start, end] as one dataset (dask-backed)."""
        days = [d for d in self.grid_days(source)
                if (start is None or d >= pd.Timestamp(start)) and (end is None or d <= pd.Timestamp(end))]
        if not days:
            raise StoreError(f"{source}: no stored days between {start or 'the beginning'} and {end or 'the end'} "
                             f"in {self.root / 'grids' / source}")
        files = [self.day_path(source, d) for d in days]
        ds = xr.open_mfdataset(files, engine="netcdf4", combine="nested", concat_dim="time",
                               data_vars="all", coords="minimal", compat="override", join="exact",
                               parallel=False, chunks={})
        if variables is not None:
            missing = [v for v in variables if v not in ds.data_vars]
            if missing:
                raise StoreError(f"{source}: variables {missing} are not stored; stored: {sorted(map(str, ds.data_vars))}")
            ds = ds[list(variables)]
        return ds

    def read_grid_day(self, source: str, day: str | pd.Timestamp) -> xr.Dataset | None:
        path = self.day_path(source, pd.Timestamp(day))
        return self._read_day_file(path) if path.exists() else None

    # ------------------------------------------------------------------ stations
    def put_stations(self, source: str, ds: xr.Dataset, *, file_name: str | None = None,
                     file_sha256: str | None = None) -> list[DayChange]:
        """Store a station reader's long-form output (dim ``obs``); one change per day touched."""
        frame = ds.to_dataframe().reset_index(drop=True)
        required = {"station_id", "time", "lat", "lon", "et"}
        if not required <= set(frame.columns):
            raise StoreError(f"{source}: station data needs columns {sorted(required)}, found {sorted(frame.columns)}")
        extra_cols = [c for c in frame.columns if c not in required | {"elevation_m", "obs"}]
        now = _now()
        changes: dict[pd.Timestamp, DayChange] = {}
        with self._db() as db:
            existing = {}
            days = sorted({f"{pd.Timestamp(t):%Y-%m-%d}" for t in frame["time"]})
            for chunk in range(0, len(days), 500):
                part = days[chunk:chunk + 500]
                rows = db.execute(
                    f"SELECT station_id, day, sha256, revision FROM station_obs WHERE source=? AND day IN "
                    f"({','.join('?' * len(part))})", (source, *part)).fetchall()
                existing.update({(r[0], r[1]): (r[2], r[3]) for r in rows})
            for row in frame.itertuples(index=False):
                rec = row._asdict()
                day = pd.Timestamp(rec["time"]).normalize()
                sid = str(rec["station_id"])
                et = None if pd.isna(rec["et"]) else float(rec["et"])
                elev = rec.get("elevation_m")
                elev = None if elev is None or pd.isna(elev) else float(elev)
                extras = json.dumps({c: (None if pd.isna(rec[c]) else (rec[c].item() if hasattr(rec[c], "item") else rec[c]))
                                     for c in extra_cols}, sort_keys=True, default=str)
                payload = json.dumps([et, round(float(rec["lat"]), 6), round(float(rec["lon"]), 6), elev, extras])
                sha = hashlib.sha256(payload.encode()).hexdigest()
                key = (sid, f"{day:%Y-%m-%d}")
                change = changes.setdefault(day, DayChange(source, day, "unchanged"))
                change.variables.append(sid)
                if key in existing and existing[key][0] == sha:
                    continue
                if key in existing:
                    db.execute("INSERT INTO station_obs_history SELECT source, station_id, day, et_mm, lat, lon, "
                               "elevation_m, extras, sha256, revision, file_name, file_sha256, stored_at, ? "
                               "FROM station_obs WHERE source=? AND station_id=? AND day=?", (now, source, *key))
                    revision, action = existing[key][1] + 1, "revised"
                else:
                    revision, action = 0, "new"
                db.execute("INSERT OR REPLACE INTO station_obs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           (source, sid, key[1], et, float(rec["lat"]), float(rec["lon"]), elev, extras,
                            sha, revision, file_name, file_sha256, now))
                existing[key] = (sha, revision)
                change.changed.append(sid)
                rank = {"unchanged": 0, "new": 1, "extended": 2, "revised": 3}
                if rank[action] > rank[change.action]:
                    change.action = action
        return [changes[d] for d in sorted(changes)]

    def read_stations(self, sources: Sequence[str] | str | None = None, start=None, end=None,
                      *, with_missing: bool = False) -> pd.DataFrame:
        """Station observations as ``source,station_id,date,lat,lon,elevation_m,et_mm`` (+ extras)."""
        if isinstance(sources, str):
            sources = [sources]
        query = "SELECT source, station_id, day, lat, lon, elevation_m, et_mm, extras, revision FROM station_obs WHERE 1=1"
        args: list = []
        if sources:
            query += f" AND source IN ({','.join('?' * len(sources))})"
            args += list(sources)
        if start is not None:
            query += " AND day >= ?"
            args.append(f"{pd.Timestamp(start):%Y-%m-%d}")
        if end is not None:
            query += " AND day <= ?"
            args.append(f"{pd.Timestamp(end):%Y-%m-%d}")
        if not with_missing:
            query += " AND et_mm IS NOT NULL"
        with self._db() as db:
            frame = read_frame(db, query + " ORDER BY source, station_id, day", args)
        frame["date"] = pd.to_datetime(frame.pop("day"))
        return frame[["source", "station_id", "date", "lat", "lon", "elevation_m", "et_mm", "extras", "revision"]]
