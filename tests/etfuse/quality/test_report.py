"""HTML reports under $ETFUSE_HOME/reports: one page per validation, named checks, JSON twin, index."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.cf import annotate
from etfuse.quality import ValidationContext, validate
from etfuse.quality.report import read_index, render_html

CTX = ValidationContext(today=date(2021, 8, 1))


def modis(settings, celsius: bool = False) -> xr.Dataset:
    r, m, res = settings.region, settings.region.margin_deg, 0.05
    lat = np.round(r.lat_max + m - (np.arange(int(round((r.lat_max - r.lat_min + 2 * m) / res))) + 0.5) * res, 6)
    lon = np.round(r.lon_min - m + (np.arange(int(round((r.lon_max - r.lon_min + 2 * m) / res))) + 0.5) * res, 6)
    values = np.full((1, lat.size, lon.size), 300.0 - (273.15 if celsius else 0.0), np.float32)
    values[0, ::3] = np.nan
    ds = xr.Dataset({"lst": (("time", "lat", "lon"), values)},
                    coords={"time": pd.DatetimeIndex(["2021-07-01"]), "lat": lat, "lon": lon})
    return annotate(ds, source="modis", source_files="MOD11A1.A2021182.tif")


def test_report_written_and_names_every_failed_check(settings, tmp_path):
    path = tmp_path / "MOD11A1.A2021182.h25v05.061.hdf"
    path.write_bytes(b"not really a tile, but its bytes name the report")
    result = validate("modis", modis(settings, celsius=True), settings=settings, file=path, context=CTX)
    assert not result.accepted

    hash8 = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    expected = (settings.folder("reports") / "modis" / "2021-07-01" / f"{path.name}-{hash8}.html").resolve()
    assert result.report_path == expected and expected.is_file()
    page = expected.read_text(encoding="utf-8")
    assert "QUARANTINED" in page
    failed = {o.check for o in result.outcomes if not o.success}
    assert {"lst_range", "lst_units_look_celsius"} <= failed
    for check in failed:
        assert f"<code>{check}</code>" in page
    for o in result.outcomes:                                   # every check is listed with its severity
        assert f"<code>{o.check}</code></td><td class=\"sev\">{o.severity}</td>" in page
    assert not re.search(r"(?:src|href)=\"https?://", page)     # self-contained: readable offline

    twin = json.loads(expected.with_suffix(".json").read_text())
    assert twin["accepted"] is False and twin["report_path"] == str(expected)
    assert {c["check"] for c in twin["critical_failures"]} == {o.check for o in result.critical_failures}
    assert result.to_json()["report_path"] == str(expected)


def test_index_lists_reports_newest_first(settings, tmp_path):
    validate("modis", modis(settings), settings=settings, file=None, context=CTX)
    validate("modis", modis(settings, celsius=True), settings=settings, file=None, context=CTX)
    root = settings.folder("reports")
    entries = read_index(root)
    assert [e["accepted"] for e in entries] == [True, False]
    assert entries[1]["critical"] and "lst_range" in entries[1]["critical"]
    index = (root / "index.html").read_text(encoding="utf-8")
    assert index.index(entries[1]["report"]) < index.index(entries[0]["report"])
    for e in entries:
        assert (root / e["report"]).is_file()


def test_same_file_same_report_revised_file_new_report(settings, tmp_path):
    path = tmp_path / "MOD11A1.A2021182.tif"
    path.write_bytes(b"v1")
    first = validate("modis", modis(settings), settings=settings, file=path, context=CTX).report_path
    again = validate("modis", modis(settings), settings=settings, file=path, context=CTX).report_path
    path.write_bytes(b"v2")
    revised = validate("modis", modis(settings), settings=settings, file=path, context=CTX).report_path
    assert first == again != revised and revised.parent == first.parent


def test_render_escapes_values(settings):
    result = validate("modis", modis(settings), settings=settings.model_copy(update={"quality": settings.quality.model_copy(
        update={"write_reports": False})}), file=None, context=CTX)
    result.file = "<script>alert(1)</script>"
    page = render_html(result)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "ACCEPTED" in page and result.report_path is None
