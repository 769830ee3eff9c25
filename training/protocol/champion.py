"""Score what users get at every station and flux-tower day, next to the raw products, with
block-bootstrap intervals: a registered model (ONNX, e.g. the champion) run on the harmonised
inputs, or the written product itself (the values the API serves, whichever version wrote them).

Unlike the cross-validation this is not a test of generalisation: the champion was trained on some
of these stations.  The table says which rows are the champion's training stations and which are
not (``in_training``), and by target source (CMA stations, other stations, FLUXNET towers).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from etfuse.settings import Settings
from training.pipeline import onnx_predict
from training.protocol.folds import station_table
from training.protocol.frame import cell_frame
from training.protocol.scores import score_tables
from training.samples import SampleSet


def score_registered(samples: SampleSet, settings: Settings, onnx_path, training_stations: list[str] | None = None
                     ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The station-day frame with a ``champion`` column and its tables (overall, season, regime,
    station, and ``by_group``: per target source and training/not-training station)."""
    frame = _station_days(samples, settings)
    frame["champion"] = onnx_predict(onnx_path, samples, samples.keys()).astype(np.float64)
    return frame, _tables(frame, "champion", settings, training_stations)


def score_product(samples: SampleSet, settings: Settings, product: pd.DataFrame,
                  training_stations: list[str] | None = None
                  ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The station-day frame with a ``product`` column and its tables, as ``score_registered``.

    ``product``: one row per station and day the product holds, columns ``station_id``, ``date``
    and ``et_mm`` (ET of the product cell holding the station [mm day-1]), e.g. from
    ``ProductStore.read_point``.  Station-days the product does not hold stay NaN and are left out
    of the scores (``days_scored`` in the tables says how many were).
    """
    missing = {"station_id", "date", "et_mm"} - set(product.columns)
    if missing:
        raise ValueError(f"product series lacks columns {sorted(missing)}; expected station_id, date, et_mm, "
                         f"found {list(product.columns)}")
    frame = _station_days(samples, settings)
    values = product.assign(date=pd.to_datetime(product["date"]))[["station_id", "date", "et_mm"]]
    frame = frame.merge(values.rename(columns={"et_mm": "product"}), on=["station_id", "date"], how="left")
    return frame, _tables(frame, "product", settings, training_stations)


def _station_days(samples: SampleSet, settings: Settings) -> pd.DataFrame:
    blocks = station_table(samples, settings.evaluation.block_km)["block"].to_numpy()
    frame = cell_frame(samples, samples.keys(), blocks)
    frame["gleam"], frame["era5land"] = frame["gleam_et"], frame["era5land_et"]
    frame["source"] = samples.stations["source"].to_numpy()[frame["s"].to_numpy()]
    return frame


def _tables(frame: pd.DataFrame, name: str, settings: Settings,
            training_stations: list[str] | None) -> dict[str, pd.DataFrame]:
    cfg = settings.evaluation
    frame["in_training"] = frame["station_id"].isin(set(training_stations or []))
    models = [name, "gleam", "era5land"]
    tables = score_tables(frame, models, block_days=cfg.bootstrap_block_days, samples=cfg.bootstrap_samples,
                          seed=cfg.seed, reference="era5land")
    groups = []
    for (source, inside), part in frame.groupby(["source", "in_training"]):
        sub = score_tables(part, models, block_days=cfg.bootstrap_block_days, samples=cfg.bootstrap_samples,
                           seed=cfg.seed)["overall"]
        groups.append(sub.assign(group=f"{source}, {'training' if inside else 'not training'} stations"))
    tables["by_group"] = pd.concat(groups, ignore_index=True) if groups else pd.DataFrame()
    return tables
