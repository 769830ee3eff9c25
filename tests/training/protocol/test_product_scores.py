"""``score_product``: the written product scored at station-days, only where it holds a day."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.training.protocol.test_protocol import fake_samples
from training.protocol.champion import score_product


def test_product_is_scored_only_on_the_days_it_holds(settings):
    samples = fake_samples()
    keys = samples.keys()
    held = keys[keys["d"] < 120]                                 # the product holds the first 120 days only
    obs = samples.targets[held["s"], held["d"]].astype(np.float64)
    product = pd.DataFrame({"station_id": samples.stations["station_id"].to_numpy()[held["s"]],
                            "date": samples.days[held["d"]], "et_mm": obs + 0.5})   # a constant bias of 0.5 mm
    frame, tables = score_product(samples, settings, product, training_stations=["S00", "S01"])
    assert frame["product"].notna().sum() == len(held)
    assert frame.loc[frame["date"] >= samples.days[120], "product"].isna().all()
    overall = tables["overall"].set_index("model")
    assert overall.loc["product", "rmse"] == pytest.approx(0.5, abs=1e-6)
    assert overall.loc["product", "n"] <= len(held)             # only rows the product and both sources share
    groups = set(tables["by_group"]["group"])
    assert groups == {"cma, training stations", "cma, not training stations"}


def test_product_series_without_the_expected_columns_is_refused(settings):
    with pytest.raises(ValueError, match="lacks columns \\['et_mm'\\].*found"):
        score_product(fake_samples(), settings, pd.DataFrame({"station_id": [], "date": [], "et": []}))
