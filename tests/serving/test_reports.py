"""GET /reports/...: validation reports over HTTP, read-only, nothing outside the reports folder."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving.api import create_app
from serving.reports import resolve_report


class _Product:
    def days(self):
        return [pd.Timestamp("2024-05-10")]


@pytest.fixture
def client(settings):
    reports = settings.folder("reports")
    (reports / "era5land" / "2024-05-01").mkdir(parents=True)
    (reports / "era5land" / "2024-05-01" / "f-1234abcd.html").write_text("<html>report</html>")
    (reports / "index.html").write_text("<html>index</html>")
    (settings.home / "secret.txt").write_text("not for the web")
    os.symlink(settings.home / "secret.txt", reports / "link-out.html")
    return TestClient(create_app(settings, product=_Product()))


def test_report_served(client):
    r = client.get("/reports/era5land/2024-05-01/f-1234abcd.html")
    assert r.status_code == 200 and r.text == "<html>report</html>"
    assert r.headers["content-type"].startswith("text/html") and r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/reports/index.html").text == "<html>index</html>"


@pytest.mark.parametrize("path", ["/reports/../secret.txt", "/reports/%2e%2e/secret.txt", "/reports/era5land/..%2f..%2fsecret.txt",
                                  "/reports//etc/passwd", "/reports/link-out.html", "/reports/era5land",
                                  "/reports/missing.html", "/reports/era5land/2024-05-01/f-1234abcd.html%00.txt"])
def test_nothing_outside_or_not_a_file(client, path):
    r = client.get(path)
    assert r.status_code == 404 and "not for the web" not in r.text


def test_read_only(client):
    assert client.post("/reports/index.html").status_code == 405
    assert client.delete("/reports/index.html").status_code == 405


def test_resolve_report_rules(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "r.html").write_text("x")
    assert resolve_report(tmp_path, "a/r.html") == (tmp_path / "a" / "r.html").resolve()
    for bad in ("../a/r.html", "a/../../x", "/a/r.html", "a\\r.html", "a", ""):
        assert resolve_report(tmp_path, bad) is None
