"""The STAC catalogue: written with each product day, validated offline with stac-validator, served.

stac-validator fetches the STAC JSON schemas from schemas.stacspec.org by default, which this
machine cannot reach; the test maps every schema URL to the copies bundled with pystac
(``pystac/validation/jsonschemas``, STAC 1.1.0 and GeoJSON) and the JSON-Schema metaschemas to
those of ``jsonschema_specifications``, and forbids network connections while validating, so the
validation really runs against the schemas.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pystac
import pytest
from fastapi.testclient import TestClient

from serving import stac
from serving.api import create_app
from serving.product import ProductStore


def offline_schema_map() -> dict[str, str]:
    import jsonschema_specifications
    import pystac.validation
    root = Path(pystac.validation.__file__).parent / "jsonschemas"
    mapping = {}
    for path in root.rglob("*.json"):
        ident = json.loads(path.read_text()).get("$id", "").rstrip("#")
        if ident:
            mapping[ident] = str(path)
    v110 = root / "stac-spec" / "v1.1.0"
    # common.json's $id is misspelt upstream ("commonjson"); the item and collection schemas ask for common.json
    mapping["https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/common.json"] = str(v110 / "common.json")
    metas = Path(jsonschema_specifications.__file__).parent / "schemas"
    for draft, url in (("draft7", "http://json-schema.org/draft-07/schema"),
                       ("draft202012", "https://json-schema.org/draft/2020-12/schema")):
        meta = metas / draft / "metaschema.json"
        if meta.is_file():
            mapping[url] = mapping[url + "#"] = str(meta)
    return mapping


@pytest.fixture
def no_network(monkeypatch):
    def refuse(self, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"network access in an offline test: {address}")
        return original(self, address)
    original = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)


def validate(path: Path) -> list[dict]:
    from stac_validator import stac_validator
    validator = stac_validator.StacValidate(str(path), schema_map=offline_schema_map())
    validator.run()
    return validator.message


@pytest.fixture
def store(settings):
    store = ProductStore(settings)
    for k, day in enumerate(pd.date_range("2021-07-01", "2021-07-03")):
        store.write_day(day, np.full(store.grid.shape, 1.0 + k, np.float32), model_version=2 + (k == 2),
                        status="provisional" if k == 2 else "final", sources_used={"era5land", "gleam"},
                        fingerprint=hashlib.sha256(f"s{k}".encode()).hexdigest(), quicklook=False)
    return store


def test_catalogue_written_with_each_day_and_valid(settings, store, no_network):
    root = stac.stac_root(settings)
    items = sorted((root / "items").glob("*.json"))
    assert [p.stem for p in items] == ["etfuse_et_2021-07-01", "etfuse_et_2021-07-02", "etfuse_et_2021-07-03"]
    for path in [root / "collection.json", *items]:
        messages = validate(path)
        assert messages and all(m["valid_stac"] for m in messages), (path, messages)
        assert messages[0]["schema"] and all(Path(s).is_file() for s in messages[0]["schema"]), messages
    item = json.loads(items[-1].read_text())
    props = item["properties"]
    record = store.record("2021-07-03")
    assert props["etfuse:model_version"] == 3 and props["etfuse:status"] == "provisional"
    assert props["etfuse:input_fingerprint"] == record.fingerprint
    assert props["etfuse:sources_used"] == ["era5land", "gleam"]
    assert props["start_datetime"] == "2021-07-03T00:00:00Z" and props["end_datetime"] == "2021-07-04T00:00:00Z"
    assert item["assets"]["data"]["href"] == "../../product/2021-07-03.nc"
    assert item["assets"]["quicklook"]["href"] == "../../map/2021-07-03.png"
    collection = pystac.Collection.from_file(str(root / "collection.json"))
    assert [str(i) for i in collection.extent.temporal.intervals[0]] == ["2021-07-01 00:00:00+00:00",
                                                                        "2021-07-04 00:00:00+00:00"]
    assert len(list(collection.get_items())) == 3


def test_invalid_item_is_rejected_offline(settings, store, tmp_path, no_network):
    """The validator is not a rubber stamp: an item without its required fields fails."""
    item = json.loads((stac.stac_root(settings) / "items" / "etfuse_et_2021-07-01.json").read_text())
    del item["properties"]["datetime"]
    item["bbox"] = "everywhere"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(item))
    messages = validate(bad)
    assert messages and not messages[0]["valid_stac"], messages


def test_replaced_day_updates_its_item(settings, store):
    store.write_day("2021-07-03", np.full(store.grid.shape, 9.0, np.float32), model_version=3, status="final",
                    sources_used={"era5land", "gleam", "modis"},
                    fingerprint=hashlib.sha256(b"final").hexdigest(), quicklook=False)
    item = json.loads((stac.stac_root(settings) / "items" / "etfuse_et_2021-07-03.json").read_text())
    assert item["properties"]["etfuse:status"] == "final"
    assert item["properties"]["etfuse:sources_used"] == ["era5land", "gleam", "modis"]
    assert stac.rebuild(settings, store) == 3


def test_served_at_stac(settings, store):
    client = TestClient(create_app(settings, product=store))
    collection = client.get("/stac/collection.json")
    assert collection.status_code == 200 and collection.json()["id"] == stac.COLLECTION_ID
    item = client.get("/stac/items/etfuse_et_2021-07-02.json").json()
    # the asset href is relative to the item's URL: /stac/items/../../product/<day>.nc = /product/<day>.nc
    data = client.get("/stac/items/" + item["assets"]["data"]["href"])
    assert data.status_code == 200 and data.content[:4] == b"\x89HDF"
    assert data.url.path == "/product/2021-07-02.nc"
    quicklook = client.get("/stac/items/" + item["assets"]["quicklook"]["href"])
    assert quicklook.status_code == 200 and quicklook.content[:4] == b"\x89PNG"
    assert client.get("/stac/%2e%2e/ledger.sqlite").status_code == 404


def test_cli_rebuilds_catalogue_and_zarr(settings, store, monkeypatch):
    from typer.testing import CliRunner

    from flows.cli import app
    from serving import zarr_store
    root = stac.stac_root(settings)
    for path in (root / "items").glob("*.json"):
        path.unlink()
    monkeypatch.setenv("ETFUSE_HOME", str(settings.home))
    monkeypatch.setenv("ETFUSE_REGION__NAME", "test")
    result = CliRunner().invoke(app, ["distribution", "rebuild", "--zarr"])
    assert result.exit_code == 0, result.output
    assert "STAC: 3 items" in result.output and "Zarr: 3 days" in result.output
    assert len(list((root / "items").glob("*.json"))) == 3
    ds = zarr_store.open_year(settings, 2021)
    assert float(ds.et.sel(time="2021-07-02").mean()) == pytest.approx(2.0)
