"""Which onnxruntime execution provider computed each product day: asked of the InferenceSession
(``get_providers()[0]``), written into the day's NetCDF file and the ledger's history row, reported
by the update; a worker configured for CUDA on a host without it falls back to the CPU with a
warning (when allowed), through onnxruntime's real ``get_available_providers``.

This machine has no GPU: the provider recorded here is ``CPUExecutionProvider``; on the GPU worker
of docker-compose.yml it is ``CUDAExecutionProvider`` (not run here)."""

from __future__ import annotations

import json
import logging

import netCDF4
import onnxruntime as ort
import pytest

from serving.predictor import CPU, CUDA, Predictor, PredictorError
from serving.product import ProductStore
from serving.update import run_update
from tests.serving.test_update import harmonise
from tests.standins import export_small_model

pytestmark = pytest.mark.skipif(CUDA in ort.get_available_providers(),
                                reason="this onnxruntime has the CUDA provider: the CPU fallback is not what runs")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return export_small_model(tmp_path_factory.mktemp("model"))


def with_serving(settings, **serving):
    return settings.model_copy(update={"serving": settings.serving.model_copy(update=serving)})


def test_cuda_asked_for_falls_back_to_the_cpu_with_a_warning(small_settings, model_file, caplog):
    assert CUDA not in ort.get_available_providers()                 # the real answer of this onnxruntime
    strict = Predictor(with_serving(small_settings, device="cuda"), model_path=model_file, model_version=1)
    with pytest.raises(PredictorError, match="no CUDA provider"):
        strict.model()
    caplog.set_level(logging.WARNING, logger="serving.predictor")
    allowed = Predictor(with_serving(small_settings, device="cuda", allow_cpu_fallback=True),
                        model_path=model_file, model_version=1)
    model = allowed.model()
    assert model.execution_provider == CPU == model.spatial.get_providers()[0]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'cuda'" in m and "running on the CPU" in m for m in warnings), warnings


def test_each_product_day_records_its_execution_provider(small_settings, small_world, model_file):
    settings = small_settings.model_copy(update={"static": small_settings.static.model_copy(
        update={"elevation_file": small_world / "static" / "elevation.nc"})})
    settings = with_serving(settings, device="cuda", allow_cpu_fallback=True, quicklooks=False)   # the GPU worker's settings
    harmonise(settings, small_world, ("era5land", "modis"))
    product = ProductStore(settings)
    predictor = Predictor(settings, model_path=model_file, model_version=1)
    report = run_update(settings, predictor=predictor, product=product, start="2021-06-20", end="2021-06-22",
                        build_years=False)
    days = ["2021-06-20", "2021-06-21", "2021-06-22"]
    assert report.providers == {d: CPU for d in days}
    assert f"on {CPU}" in report.summary()
    for day in days:
        with netCDF4.Dataset(product.day_path(day)) as nc:
            assert nc.getncattr("etfuse_execution_provider") == CPU
            assert nc.getncattr("history").endswith(f"on {CPU}")
        history = product.history(day)
        assert json.loads(history["detail"].iloc[-1])["execution_provider"] == CPU
