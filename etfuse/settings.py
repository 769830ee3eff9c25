"""One typed settings object for the whole system.

Values come, in rising priority, from the defaults below, a YAML file (``--config`` or
``ETFUSE_CONFIG``), ``ETFUSE_*`` environment variables (nested keys joined by ``__``, e.g.
``ETFUSE_REGION__RESOLUTION_DEG=0.05``) and keyword overrides.  Unknown keys are rejected so a
typo in a config file fails loudly instead of silently keeping a default.
"""

from __future__ import annotations

import contextvars
import os
import re
from importlib import resources
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import YamlConfigSettingsSource

RUNTIME_FOLDERS = ("landing", "archive", "quarantine", "harmonised", "product", "mlflow",
                   "alerts", "reports", "cache", "fetch")

_yaml_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("etfuse_yaml", default=None)


def named_regions() -> dict[str, dict[str, Any]]:
    """Regions shipped in ``etfuse/data/regions.yaml`` (edges [degrees], resolution [degrees])."""
    text = resources.files("etfuse.data").joinpath("regions.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _listed(value: Any, *, separator: str) -> Any:
    """A list given as one string (an environment variable): a YAML list ``[a, b]``, or items split
    where the regular expression ``separator`` matches; anything else is left to pydantic."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return tuple(yaml.safe_load(text))
    return tuple(part.strip() for part in re.split(separator, text) if part.strip())


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegionSettings(_Section):
    """The target grid: cell edges [degrees east/north] and cell size [degrees]."""

    name: str = "qinghai"
    lon_min: float = 89.5
    lon_max: float = 103.4
    lat_min: float = 31.37
    lat_max: float = 39.87
    resolution_deg: float = Field(0.01, gt=0)
    #: Source grids are clipped to the region plus this margin [degrees], so that nearest-neighbour
    #: and bilinear lookups at the region's edge still find their source cells.
    margin_deg: float = Field(0.5, ge=0)

    @model_validator(mode="after")
    def _check_bounds(self) -> "RegionSettings":
        if not (-180 <= self.lon_min < self.lon_max <= 360):
            raise ValueError(f"region {self.name!r}: expected lon_min < lon_max within [-180, 360], "
                             f"got {self.lon_min}..{self.lon_max}")
        if not (-90 <= self.lat_min < self.lat_max <= 90):
            raise ValueError(f"region {self.name!r}: expected lat_min < lat_max within [-90, 90], "
                             f"got {self.lat_min}..{self.lat_max}")
        for axis, span in (("lon", self.lon_max - self.lon_min), ("lat", self.lat_max - self.lat_min)):
            cells = span / self.resolution_deg
            if abs(cells - round(cells)) > 1e-6 * max(1.0, cells):
                raise ValueError(
                    f"region {self.name!r}: the {axis} extent {span:g} deg is not a whole number of "
                    f"{self.resolution_deg:g} deg cells ({cells:.4f}); adjust the bounds or the resolution")
        return self

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) [degrees]."""
        return (self.lon_min, self.lat_min, self.lon_max, self.lat_max)


class CmaSettings(_Section):
    """Turning CMA pan evaporation into actual ET.

    Pan evaporation measures atmospheric demand; actual ET over Qinghai's grassland is a fraction
    of it.  ``ET [mm] = coefficient * pan [mm]``; the large E601B pan is preferred, the small 20 cm
    pan is used only when the large one is missing.  Defaults are starting values to calibrate
    against flux sites (e.g. CN-HaM); per station and month values come from ``coefficient_file``.
    """

    pan_coefficient_large: float = Field(0.5, gt=0, le=1.5)
    pan_coefficient_small: float = Field(0.35, gt=0, le=1.5)
    #: CSV with columns ``station_id,month,pan,coefficient`` (pan = large|small); overrides defaults.
    coefficient_file: Path | None = None
    #: QC codes whose values are kept (0 correct, 1 suspect, 4 corrected, 9 not checked ...);
    #: 8 (missing) and 2 (wrong) are always dropped.
    accepted_qc: tuple[int, ...] = (0, 1, 4, 9)


class FluxnetSettings(_Section):
    """Turning FLUXNET2015 daily latent heat flux into ET (docs/data-sources.md, FLUXNET2015).

    ``le_variable`` picks the flux: ``LE_F_MDS`` (gap-filled, as measured) or ``LE_CORR`` (scaled
    for energy-balance closure; a file without the column is refused, a day without a value is
    missing).  Either way a day counts only if ``LE_F_MDS_QC``, the share of its half-hours that
    were measured or gap-filled with good quality, is at least ``min_qc_fraction`` [1].
    """

    le_variable: Literal["LE_F_MDS", "LE_CORR"] = "LE_F_MDS"
    min_qc_fraction: float = Field(0.5, ge=0, le=1)


class ModisSettings(_Section):
    """MOD11A1 quality screening and the lat/lon grid the sinusoidal tiles are resampled to."""

    #: Keep pixels whose mandatory QA (QC bits 0-1) is 01 "other quality" as well as 00 "good".
    accept_other_quality: bool = True
    #: Highest accepted LST error flag (QC bits 6-7): 0 <= 1 K, 1 <= 2 K, 2 <= 3 K, 3 > 3 K.
    max_lst_error_flag: int = Field(1, ge=0, le=3)
    #: Cell size of the lat/lon grid HDF tiles are reprojected to [degrees]; None = region's.
    grid_resolution_deg: float | None = Field(None, gt=0)
    #: A day still lacking expected tiles this long after its first tile was stored raises a
    #: ``modis_tiles_missing`` warning [hours].
    missing_tile_grace_hours: float = Field(24.0, ge=0)
    #: Days whose tiles arrived within this many days (before the grace) are checked [days].
    missing_tile_lookback_days: float = Field(14.0, gt=0)


class LstSettings(_Section):
    """Where MODIS LST is missing the model gets ERA5-Land skin temperature instead, flagged.

    MODIS Terra's daytime LST (about 10:30 local) runs warmer than ERA5-Land's daily-mean ``skt``;
    the fallback adds the day's median (LST - skt) over cells where both exist, or this default
    offset when fewer than ``min_overlap_cells`` cells overlap.
    """

    fallback_default_offset_k: float = 8.0
    min_overlap_cells: int = Field(50, ge=1)


class StaticSettings(_Section):
    """Inputs that do not change from day to day."""

    #: A DEM on a regular lat/lon grid: variable ``elevation`` [m] (e.g. SRTM resampled to 0.01 deg);
    #: None = the elevation feature is marked missing everywhere.
    elevation_file: Path | None = None


class IngestSettings(_Section):
    """How the landing zone is read."""

    #: Files younger than this are left for the next run (a provider may still be writing) [s].
    min_age_seconds: float = Field(0.0, ge=0)
    #: Name patterns that mark files still being written (never ingested).
    partial_suffixes: tuple[str, ...] = (".part", ".partial", ".tmp", ".download", ".crdownload")


class QualitySettings(_Section):
    """Validation thresholds (Great Expectations suites in etfuse/quality); see docs/validation.md.

    Values are in the canonical units the readers return (etfuse/cf.py): ET and pan evaporation
    [kg m-2 per day = mm/day], net radiation [MJ m-2 per day], temperatures [K].  Every check's
    severity is fixed in etfuse/quality/suites.py: critical -> quarantine, warning -> accept and
    alert, info -> reported only.
    """

    # -- physical ranges (critical): no value of a batch may fall outside ------------------------
    #: Daily actual ET [kg m-2 per day]; ERA5-Land shows small negative values (dew, condensation).
    et_min: float = -2.0
    et_max: float = 20.0
    #: Daily net radiation [MJ m-2 per day].
    net_radiation_min: float = -10.0
    net_radiation_max: float = 35.0
    #: Daily-mean skin and 2 m air temperature [K].
    skt_min_k: float = 200.0
    skt_max_k: float = 340.0
    t2m_min_k: float = 200.0
    t2m_max_k: float = 330.0
    #: MODIS daytime land surface temperature [K] (MOD11A1 itself cannot hold less than 150 K).
    lst_min_k: float = 200.0
    lst_max_k: float = 350.0
    #: Daily precipitation [kg m-2 per day].
    precipitation_min: float = 0.0
    precipitation_max: float = 300.0
    #: CMA pan evaporation, either pan [kg m-2 per day].
    pan_evaporation_min: float = 0.0
    pan_evaporation_max: float = 30.0
    #: FLUXNET daily mean latent heat flux [W m-2].
    latent_heat_flux_min: float = -100.0
    latent_heat_flux_max: float = 500.0
    #: Share of a variable's values that must lie inside its range [1]; 1.0 = every value.
    range_mostly: float = Field(1.0, gt=0, le=1)

    # -- units that look wrong although the attribute is right (critical) ----------------------
    #: A batch whose largest daily ET (over the region's cells, or over its station rows) is below
    #: this looks like metres labelled mm [kg m-2 per day].  The whole batch, not each day, so a
    #: frozen winter day over a small region is never mistaken for a unit error.
    et_units_min_largest: float = Field(0.05, ge=0)
    #: A batch whose largest |daily net radiation| over the region is below this has a wrong unit
    #: (e.g. MJ values labelled J, divided by 1e6 once more) [MJ m-2 per day].
    net_radiation_units_min_largest: float = Field(0.01, ge=0)
    #: A day whose mean skin/land surface temperature is below this looks like degrees Celsius
    #: labelled K [K].
    temperature_units_min_daily_mean_k: float = 150.0

    # -- coverage (critical unless stated) -------------------------------------------------------
    #: Days after today (UTC) still accepted, for clock skew and time zones [days]; a day later
    #: than today + this is a future date (critical).
    future_tolerance_days: int = Field(1, ge=0, le=31)
    #: The cells inside the region must reach each region edge within this many source cells
    #: [source cells] (warning: the region is only partly covered).
    edge_tolerance_cells: float = Field(1.0, ge=0)

    # -- completeness (warning) -------------------------------------------------------------------
    #: Largest share of region cells without a value on a day, per gridded source [1].  Qinghai is
    #: land, so ERA5-Land and GLEAM should be nearly complete; MODIS has cloud gaps every day.
    era5land_max_missing_share: float = Field(0.05, ge=0, le=1)
    gleam_max_missing_share: float = Field(0.15, ge=0, le=1)
    modis_max_missing_share: float = Field(0.95, ge=0, le=1)
    #: Largest share of station-day rows whose ET is missing in one batch [1].
    station_max_missing_share: float = Field(0.25, ge=0, le=1)
    #: Smallest share of the batch's days (the file's claimed period when its name says one) for
    #: which each station has a row [1].
    station_min_days_present_share: float = Field(0.8, ge=0, le=1)

    # -- station metadata ---------------------------------------------------------------------------
    #: Plausible station elevations in the region [m] (Qinghai's CMA stations lie at 1,814-4,612 m)
    #: (warning outside).
    station_elevation_min_m: float = 1000.0
    station_elevation_max_m: float = 6000.0
    #: Elevations no station can have [m] (below / above): a raw code or an undecoded +100000
    #: "estimated" flag survived (critical).
    station_elevation_impossible_below_m: float = -500.0
    station_elevation_impossible_above_m: float = 9000.0
    #: A known station reported farther than this from its location in the facts tables
    #: [degrees] (warning; stations do move, rarely this far).
    station_location_tolerance_deg: float = Field(0.5, gt=0)
    #: CMA pan values >= 30000 are codes (0.1 mm units), i.e. >= 3000 kg m-2 after scaling; any
    #: pan or ET value at or above this is a code that survived as a number [kg m-2] (critical).
    cma_special_code_min: float = 3000.0

    # -- consistency between sources on the same day (warning) -------------------------------
    #: Largest |region-mean GLEAM ET - region-mean ERA5-Land ET| on a day [kg m-2 per day].
    consistency_et_max_abs_diff: float = Field(4.0, gt=0)
    #: Largest |region-mean MODIS LST - region-mean ERA5-Land skt| on a day [K] (daytime LST runs
    #: about 8 K warmer than the daily-mean skin temperature).
    consistency_lst_skt_max_abs_diff_k: float = Field(25.0, gt=0)
    #: Share of a batch's days that must stay within those bounds; a single odd day in a yearly
    #: GLEAM file is weather, a tenth of the days is a problem [1].
    consistency_min_share_of_days: float = Field(0.9, gt=0, le=1)

    # -- drift against the training data's statistics (warning) -----------------------------
    #: Batch mean of a variable must lie within reference mean +- drift_k * reference std of the
    #: same calendar month [1].
    drift_k: float = Field(3.0, gt=0)
    #: Month statistics built from fewer values are not used (reported as info) [values].
    drift_min_count: int = Field(1000, ge=1)
    #: Quantiles p01/p50/p99 are computed from a systematic sample of at most this many values per
    #: source, variable and month [values]; mean, std and count use every value.
    drift_quantile_sample: int = Field(1_000_000, ge=1000)
    #: Reference statistics (JSON from etfuse.quality.drift); None = $ETFUSE_HOME/harmonised/reference_stats.json.
    reference_stats_file: Path | None = None

    # -- results and reports ------------------------------------------------------------------------
    #: Unexpected values kept per failed expectation (GE ``partial_unexpected_count``) [values].
    partial_unexpected_count: int = Field(5, ge=0, le=100)
    #: Write an HTML report per validation under $ETFUSE_HOME/reports/<source>/<YYYY-MM-DD>/.
    write_reports: bool = True

    @model_validator(mode="after")
    def _check_ranges(self) -> "QualitySettings":
        pairs = [("et_min", "et_max"), ("net_radiation_min", "net_radiation_max"), ("skt_min_k", "skt_max_k"),
                 ("t2m_min_k", "t2m_max_k"), ("lst_min_k", "lst_max_k"), ("precipitation_min", "precipitation_max"),
                 ("pan_evaporation_min", "pan_evaporation_max"), ("latent_heat_flux_min", "latent_heat_flux_max"),
                 ("station_elevation_min_m", "station_elevation_max_m"),
                 ("station_elevation_impossible_below_m", "station_elevation_impossible_above_m")]
        for low, high in pairs:
            if getattr(self, low) >= getattr(self, high):
                raise ValueError(f"quality.{low} ({getattr(self, low)}) must be below quality.{high} "
                                 f"({getattr(self, high)})")
        return self


class TrainingSettings(_Section):
    """GCN-GRU training; see docs/model-card.md."""

    #: Width of the graph-convolution and GRU hidden state [channels].
    hidden: int = Field(16, ge=2, le=256)
    #: Graph-convolution layers per day; the receptive field is this many cells (+1 for degrees).
    gcn_layers: int = Field(2, ge=1, le=6)
    #: Training subgraphs are (2r+1) x (2r+1) cells around each station; r must cover the
    #: receptive field so the station's output equals the whole-grid output [cells].
    patch_radius: int = Field(3, ge=1, le=20)
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    #: Stop when the validation loss has not improved for this many epochs.
    patience: int = Field(8, ge=1)
    #: Give the model the raw latitude and longitude of each cell.  Off by default: with them the
    #: model learns station positions and extrapolates from them where no station is (2.5 mm/d
    #: errors in the station-less south-west against the realistic world's truth); the features
    #: stay in the input layout and are zeroed with their masks by the model's encoder.
    position_features: bool = False
    #: Probability that a training sample loses a source for its whole window (source dropout).
    dropout_gleam: float = Field(0.3, ge=0, le=1)
    dropout_modis: float = Field(0.3, ge=0, le=1)
    dropout_era5land: float = Field(0.1, ge=0, le=1)
    #: Share of stations held out entirely (spatial hold-out).
    heldout_station_fraction: float = Field(0.25, gt=0, lt=1)
    #: Final share of the period held out (temporal hold-out).
    temporal_holdout_fraction: float = Field(0.2, gt=0, lt=1)
    #: Share of training samples kept aside for early stopping.
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    #: Station sources used as targets.
    target_sources: tuple[str, ...] = ("cma", "stations", "fluxnet")
    seed: int = 0
    #: "auto" = CUDA when available, else CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: torch CPU threads while training; None = torch's default (one per core).  On cores shared
    #: with other busy processes, 1 is often several times faster than 2: idle threads spin while
    #: waiting for a descheduled sibling (an epoch measured 0.3 s with 1 thread, 6.9 s with 2,
    #: at load 4-5 on 2 cores).
    threads: int | None = Field(None, ge=1)


class ScheduleSettings(_Section):
    """When the deployed flows run (Prefect cron strings, evaluated in ``timezone``)."""

    #: The daily flow (ingest, then update).  ERA5-Land-T arrives about 5 days behind; GLEAM and
    #: final ERA5-Land much later: the daily run picks up whatever has arrived.
    daily_cron: str = "30 6 * * *"
    #: The retrain flow (monthly).
    retrain_cron: str = "0 3 1 * *"
    timezone: str = "UTC"
    #: Work pool of the production worker (docker-compose.yml); `etfuse schedule` needs none.
    work_pool: str = "etfuse-pool"


class ServingSettings(_Section):
    """The predictor, the product and the HTTP API; see docs/product.md and docs/configuration.md."""

    #: "cpu", "cuda" (fails unless CUDA really runs, see allow_cpu_fallback) or "auto" (CUDA when usable).
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    #: Accept the CPU when CUDA was asked for but is not usable (onnxruntime-gpu would do it silently).
    allow_cpu_fallback: bool = False
    #: onnxruntime intra-op threads.
    threads: int = Field(2, ge=1, le=256)
    #: Core tile size [cells]; each tile is read with a halo of the model's receptive field.  96:
    #: a tile's activations (hidden x 102 x 102 floats) stay in a core's L2 cache; the spatial pass
    #: of a full-province day took 0.13 s against 0.18 s with 256 (one thread, same output).
    tile_size: int = Field(96, ge=8, le=8192)
    #: First day of the product: update and daily compute nothing before it (a backfill given an
    #: explicit range still can).  None = from the first day with ERA5-Land.
    first_day: date | None = None
    #: Keep this many assembled input days in memory between consecutive product days.
    feature_cache_days: int = Field(8, ge=0, le=64)
    #: zlib level of product files and the precision kept [mm] (least significant digit).
    compression_level: int = Field(4, ge=0, le=9)
    least_significant_digit: int | None = Field(2, ge=0, le=6)
    #: Write a quicklook PNG beside each product day.
    quicklooks: bool = True
    #: HTTP API
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    #: uvicorn worker processes of ``etfuse serve`` (each with its own render lane and open files).
    #: 2 served point/area reads faster than 1 on the 2-core bench host (bench/results.md, api_load),
    #: but each worker counts its own requests in /metrics: keep 1 where Prometheus rates matter.
    api_workers: int = Field(1, ge=1, le=32)
    #: Longest time series one request may ask for [days].
    max_range_days: int = Field(3660, ge=1)
    #: Largest area statistic one request may ask for [cells].
    max_area_cells: int = Field(2_000_000, ge=1)
    #: Admin token for mutating routes (none = those routes are disabled); read-only otherwise.
    admin_token: str | None = Field(None, repr=False, exclude=True)


class MlflowSettings(_Section):
    """Experiment tracking and the model registry (training/registry/); see docs/registry.md.

    Where MLflow is, in falling priority: an explicit ``tracking_uri=`` in code, the environment
    variable ``MLFLOW_TRACKING_URI`` (when set and not empty), ``tracking_uri`` below (YAML or
    ``ETFUSE_MLFLOW__TRACKING_URI``), then the embedded default.  The registry always lives at the
    tracking URI.
    """

    #: None = embedded default: ``sqlite:///$ETFUSE_HOME/mlflow/mlflow.db``.  Otherwise any MLflow
    #: tracking URI, e.g. ``http://mlflow:5000`` (a server) or ``postgresql://user@host/db``.
    tracking_uri: str | None = None
    #: Experiment that training runs are logged to (created on first use).
    experiment_name: str = Field("etfuse", min_length=1)
    #: The one registered model whose versions are the trained GCN-GRUs; aliases ``champion``
    #: (what serving uses) and ``challenger`` (the latest candidate) point at its versions.
    registered_model_name: str = Field("etfuse-gcn-gru", min_length=1)
    #: Promotion gate: a challenger becomes champion only if its held-out RMSE is below the
    #: champion's held-out RMSE minus this margin [mm/day] (and below raw GLEAM and ERA5-Land).
    #: Not zero: a retrained model that is no better must not replace the champion on the
    #: strength of rounding noise (ONNX and PyG agree to about 1e-6 mm, not exactly).
    promotion_margin_mm: float = Field(0.01, ge=0)
    #: Where a newly created experiment stores artifacts (a folder or URI such as
    #: ``s3://bucket/etfuse``).  None = ``$ETFUSE_HOME/mlflow/artifacts`` when the tracking URI is a
    #: database or file (embedded default), and the server's own default (usually proxied
    #: ``mlflow-artifacts:/``) for an ``http(s)://`` server.  Existing experiments keep theirs.
    artifact_location: str | None = None


class PrefectSettings(_Section):
    #: None = Prefect's ephemeral API (no server); set to e.g. http://127.0.0.1:4200/api.
    api_url: str | None = None


class AlertSettings(_Section):
    """Data-quality and pipeline alerts (etfuse/alerts); see docs/alerts.md.

    Every alert goes to ``$ETFUSE_HOME/alerts/alerts.jsonl``; the webhook and e-mail channels are
    used only when configured.  Secrets (the webhook URL, which carries a token in Slack-style
    services, and the SMTP password) are left out of ``repr`` and of ``model_dump``/``to_yaml``.
    """

    #: Slack-compatible incoming-webhook URL (http or https); None = no webhook channel.
    webhook_url: str | None = Field(None, repr=False, exclude=True)
    #: SMTP server for e-mail alerts; None = no e-mail channel (then smtp_from/smtp_to are unused).
    smtp_host: str | None = None
    smtp_port: int = Field(25, ge=1, le=65535)
    #: Envelope and header sender, e.g. ``etfuse@example.org``; required with smtp_host.
    smtp_from: str | None = None
    #: Recipients; a YAML list, or one string with commas; required with smtp_host.  (``| str`` lets
    #: ``ETFUSE_ALERTS__SMTP_TO=a@x.cn,b@y.cn`` through the env source; the validator makes a tuple.)
    smtp_to: tuple[str, ...] | str = ()
    #: SMTP login (AUTH) only when set; the password is never logged or written anywhere.
    smtp_user: str | None = None
    smtp_password: str | None = Field(None, repr=False, exclude=True)
    #: Upgrade the connection with STARTTLS (port 587 style) before login.
    smtp_starttls: bool = False
    #: Implicit TLS from the first byte (SMTPS, port 465 style); exclusive with smtp_starttls.
    smtp_ssl: bool = False
    #: CA bundle (PEM) that signs the SMTP server's certificate; None = the system's trust store.
    smtp_ca_file: Path | None = None
    #: Name sent in EHLO; None = this machine's fully qualified name.
    smtp_local_hostname: str | None = None
    #: Apprise URLs of further channels (docs/alerts.md): ``mailto://``, ``json://``, ``slack://``,
    #: ``wecombot://``, ``dingtalk://``, ``feishu://``, ... or ``wecom+https://<the bot's webhook URL>``.
    #: A YAML list, or one string with commas or spaces.  They carry tokens: never logged or dumped.
    apprise_urls: tuple[str, ...] | str = Field((), repr=False, exclude=True)
    #: Lowest severity delivered to the Apprise channels.
    min_severity_apprise: Literal["info", "warning", "critical"] = "warning"
    #: Public base URL of the validation reports as the API serves them (``https://host/reports``);
    #: alerts then link there instead of to ``file://`` paths.  None = file links.
    reports_base_url: str | None = None
    #: Lowest severity delivered by the webhook / by e-mail (the JSON-lines log gets everything).
    min_severity_webhook: Literal["info", "warning", "critical"] = "info"
    min_severity_email: Literal["info", "warning", "critical"] = "warning"
    #: Identical problems within this window [minutes] are grouped into one alert.
    group_window_minutes: int = Field(60, ge=0)
    #: Socket timeout of one delivery attempt [s].
    timeout_s: float = Field(3.0, gt=0, le=120)
    #: Extra attempts after a failed delivery (total attempts = 1 + retries).
    retries: int = Field(2, ge=0, le=10)
    #: Pause before the first retry [s]; doubles with every further retry.
    retry_backoff_s: float = Field(0.2, ge=0, le=60)
    #: After a channel has failed every attempt, it is not tried again by the same dispatcher for
    #: this long [s] (those alerts are logged as channel_failed), so a dead server cannot stall ingest.
    channel_cooldown_s: float = Field(60.0, ge=0)

    @field_validator("smtp_to", mode="before")
    @classmethod
    def _split_recipients(cls, value: Any) -> Any:
        return _listed(value, separator=",")

    @field_validator("apprise_urls", mode="before")
    @classmethod
    def _split_apprise_urls(cls, value: Any) -> Any:
        return _listed(value, separator=r"[,\s]+")

    @field_validator("reports_base_url")
    @classmethod
    def _check_reports_base_url(cls, value: str | None) -> str | None:
        value = (value or "").strip() or None
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("alerts.reports_base_url: expected an http:// or https:// URL")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook_url(cls, value: str | None) -> str | None:
        value = (value or "").strip() or None            # empty (e.g. from the environment) = off
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("alerts.webhook_url: expected an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _check_smtp(self) -> "AlertSettings":
        if self.smtp_host:
            missing = [name for name in ("smtp_from", "smtp_to") if not getattr(self, name)]
            if missing:
                raise ValueError(f"alerts.smtp_host is set ({self.smtp_host}) but {' and '.join(missing)} "
                                 f"{'is' if len(missing) == 1 else 'are'} empty; e-mail alerts need a sender "
                                 "and at least one recipient")
        if self.smtp_starttls and self.smtp_ssl:
            raise ValueError("alerts.smtp_starttls and alerts.smtp_ssl are exclusive: STARTTLS upgrades a "
                             "plain connection (port 587), smtp_ssl starts with TLS (port 465)")
        if self.smtp_password and not self.smtp_user:
            raise ValueError("alerts.smtp_password is set but alerts.smtp_user is not")
        return self


class FreshnessSettings(_Section):
    """How late each source's data may arrive before its delivery counts as overdue [days].

    A delay is counted from the end of the data day to now: ERA5-Land-T is published about 5 days
    behind real time, MODIS MOD11A1 1-2 days, CMA daily values the next day, GLEAM yearly (months
    late).  ``None`` means the source is not expected on a schedule (it is never overdue).  Used
    by the overdue-delivery alerts of ingest and fetch and by the API's readiness.
    """

    era5land_days: float | None = Field(6.0, gt=0)
    modis_days: float | None = Field(3.0, gt=0)
    cma_days: float | None = Field(2.0, gt=0)
    #: GLEAM v3.x is released once a year, covering the year before
    gleam_days: float | None = Field(550.0, gt=0)
    stations_days: float | None = Field(None, gt=0)
    fluxnet_days: float | None = Field(None, gt=0)
    #: the newest product day may be this old before the product counts as stale [days]
    product_days: float | None = Field(7.0, gt=0)
    #: an overdue source is alerted again after this long while it stays overdue [hours]
    alert_every_hours: float = Field(24.0, gt=0)
    #: dead-man's-switch URL (e.g. healthchecks.io) pinged with GET after each successful daily run;
    #: None = no ping.  It may carry a token: left out of repr and of the dumped settings.
    heartbeat_url: str | None = Field(None, repr=False, exclude=True)
    #: timeout of one heartbeat ping [s]
    heartbeat_timeout_s: float = Field(5.0, gt=0, le=120)
    #: extra heartbeat attempts after a failure, with doubling pauses from heartbeat_backoff_s [s]
    heartbeat_retries: int = Field(2, ge=0, le=10)
    heartbeat_backoff_s: float = Field(1.0, ge=0, le=60)

    def expected_delay_days(self, source: str) -> float | None:
        """The allowed delay of ``source`` (``era5land``, ``modis``, ..., or ``product``) [days]."""
        field = f"{source}_days"
        if field not in type(self).model_fields:
            known = sorted(name[:-5] for name in type(self).model_fields if name.endswith("_days"))
            raise KeyError(f"no freshness setting for {source!r}; expected one of {known}")
        return getattr(self, field)


class DistributionSettings(_Section):
    """How the product reaches users beyond the NetCDF files: the web explorer's API limits, the
    STAC catalogue, the Zarr store, metrics and access control; see docs/product.md and
    docs/explorer.md."""

    #: Rewrite the static STAC catalogue (``<product>/stac``) with each written day.
    stac: bool = True
    #: Absolute URL the STAC catalogue is served under (e.g. ``https://et.example.org/stac``);
    #: None = relative links only (a self-contained catalogue, as served at ``/stac``).
    stac_base_url: str | None = None
    #: Also write each day into the Zarr v3 store (region writes, consolidated metadata).
    zarr: bool = False
    #: Where the Zarr stores live: a local folder or ``s3://bucket/prefix``; None = ``<product>/zarr``.
    zarr_url: str | None = None
    #: Zarr chunk shape (time [days], lat [cells], lon [cells]).
    zarr_chunks: tuple[int, int, int] = (8, 128, 128)
    #: S3 endpoint for ``s3://`` Zarr URLs (SeaweedFS in compose: ``http://seaweedfs:8333``);
    #: None = AWS.  Credentials: the two fields below, else AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
    s3_endpoint_url: str | None = None
    s3_access_key_id: str | None = Field(None, repr=False, exclude=True)
    s3_secret_access_key: str | None = Field(None, repr=False, exclude=True)
    #: Requests one client (IP address) may make per minute; 0 = no limit.
    rate_limit_per_minute: int = Field(600, ge=0)
    #: Largest NetCDF subset (cells x days) served without the token of ``serving.admin_token``.
    public_subset_cells: int = Field(2_000_000, ge=0)
    #: Largest NetCDF subset (cells x days) served at all, even with the token.
    max_subset_cells: int = Field(50_000_000, ge=1)
    #: Width of the render lane per API process (serving/render_lane.py): NetCDF subsets and first
    #: drawings of map overlays running at the same time; more wait there, holding no thread (a
    #: subset costs 50-200 ms of CPU, a drawing about 0.2 s; point and area reads never wait for them).
    max_concurrent_downloads: int = Field(1, ge=1, le=64)
    #: Where the render lane runs: "process" = that many worker processes of their own (own GIL and
    #: netCDF handles, lower CPU priority), "thread" = threads of the API process.
    render_lane: Literal["process", "thread"] = "process"
    #: Niceness added to the render lane's processes: the API process gets the CPU first [0-19].
    render_nice: int = Field(10, ge=0, le=19)
    #: Renders waiting in the lane per API process at most; one more is answered 503 with Retry-After.
    render_queue: int = Field(256, ge=1)
    #: ``/metrics`` without the token (set when Prometheus scrapes over a private network only).
    metrics_public: bool = False
    #: Folder of the built explorer bundle (``index.html``, ``vendor/``); None = ``serving/explorer/dist``
    #: beside the code (``make explorer``).  Images that build the bundle in a separate stage point here.
    explorer_dist: Path | None = None
    #: ``serving.api:app_from_environment`` connects the model registry (``/model``, ``/ready``); off
    #: for a product-only server (the load bench) with no MLflow.
    serve_with_registry: bool = True


class UpdateSettings(_Section):
    """Today first: how the daily run orders its work and shares the product with the history recompute.

    After a promotion or rollback every product day is stale.  The daily run computes the newest
    stale days first (in chunks of ``history_chunk_days``, newest chunk first) and at most
    ``recent_days`` of them; older stale days go to the background history recompute (flow
    ``history``), which works in chunks, takes the product lock per chunk and lets a waiting daily
    run in between two chunks.
    """

    #: The daily run computes at most this many (the newest) stale days; the rest is history [days].
    recent_days: int = Field(14, ge=1)
    #: Days per chunk of the history recompute (one product-lock hold) [days].
    history_chunk_days: int = Field(30, ge=1, le=3660)
    #: Niceness added to the history recompute's process (lower CPU priority; 0 = unchanged).
    history_nice: int = Field(10, ge=0, le=19)
    #: An update waits this long for the product lock (another update running) before it fails [s];
    #: 0 = fail at once.
    lock_wait_s: float = Field(3 * 3600.0, ge=0)
    #: How often a waiting update retries the lock [s].
    lock_poll_s: float = Field(0.5, gt=0, le=60)


class WatchSettings(_Section):
    """Runs when data arrive: ``etfuse watch`` watches ``landing/`` and starts the ingest + update
    deployment once a burst of deliveries has settled (flows/watch.py); the cron stays as catch-up."""

    #: A burst of files counts as one delivery once nothing new landed for this long [s].
    quiet_s: float = Field(10.0, gt=0, le=3600)
    #: ... or once the first file of the burst is this old, even while files keep coming [s].
    max_wait_s: float = Field(300.0, gt=0, le=86400)
    #: The deployment started per delivery (``flow/deployment``): the daily one is ingest + update.
    deployment: str = "daily/daily"
    #: Poll the folder instead of inotify (network filesystems, some container mounts).
    force_polling: bool = False


class FetchSourceSettings(_Section):
    """What every fetch plug-in shares: whether it runs, when, and how hard it tries.

    Credentials are never settings: they come from the environment, ``.env`` or ``~/.netrc``
    (docs/operations.md, "Fetching").
    """

    enabled: bool = False
    #: When the scheduled ``fetch-<source>`` deployment runs (Prefect cron, ``schedule.timezone``).
    cron: str = "0 5 * * *"
    #: Extra attempts of one download after a failure (total attempts = 1 + retries).
    retries: int = Field(3, ge=0, le=20)
    #: Pause before the first retry [s]; doubles with every further retry.
    backoff_s: float = Field(2.0, ge=0, le=600)
    #: Longest wait for a connection or for the next block of a download [s]; a server silent
    #: for longer counts as stalled and the attempt is retried.
    timeout_s: float = Field(60.0, gt=0, le=3600)
    #: Without --since, look back this many days for data not fetched yet [days].
    lookback_days: int = Field(30, ge=1, le=3660)


class Era5LandFetchSettings(FetchSourceSettings):
    """ERA5-Land hourly from the Copernicus Climate Data Store (``cdsapi``)."""

    cron: str = "0 4 * * *"
    dataset: str = "reanalysis-era5-land"
    #: CDS long names of what the reader uses: e (ET), ssr + str (net radiation), skt.
    variables: tuple[str, ...] = ("total_evaporation", "surface_net_solar_radiation",
                                  "surface_net_thermal_radiation", "skin_temperature")
    #: ERA5-Land-T appears about this many days after the day [days]; later days are not asked for.
    latency_days: int = Field(5, ge=0, le=60)
    #: Days younger than this are still ERA5T when fetched; once older, final ERA5-Land should
    #: exist and the days are asked for again [days] (ERA5T is replaced 2-3 months later).
    final_delay_days: int = Field(90, ge=1, le=400)
    #: Largest request, in fields = variables x hours x days [fields]; a month of the four
    #: variables is 2,976 fields (the CDS refuses requests above its per-dataset cost limit).
    max_fields_per_request: int = Field(12000, ge=24)
    #: "netcdf" or "grib" (the reader reads both).
    data_format: Literal["netcdf", "grib"] = "netcdf"


class ModisFetchSettings(FetchSourceSettings):
    """MOD11A1 tiles from NASA Earthdata (``earthaccess``)."""

    cron: str = "0 6 * * *"
    short_name: str = "MOD11A1"
    version: str = "061"
    #: Tiles to download, e.g. ``["h25v05"]``; empty = every tile touching the region.
    tiles: tuple[str, ...] = ()


class PullFetchSettings(FetchSourceSettings):
    """What the pull sources (``gleam``, ``remote``) share: a server URL and its SSH host key."""

    #: The server, e.g. ``sftp://host:2225/path`` or ``https://host/drop/``; never with a password.
    url: str | None = None
    #: SSH known_hosts file holding the server's host key; None = ``~/.ssh/known_hosts``.
    known_hosts: Path | None = None

    @field_validator("url")
    @classmethod
    def _no_password_in_url(cls, value: str | None) -> str | None:
        """Credentials never live in settings: a URL carrying a password is refused."""
        from urllib.parse import urlsplit
        if value and urlsplit(value).password:
            raise ValueError("the URL carries a password; put credentials in the environment, .env or ~/.netrc "
                             "(docs/operations.md, Fetching), not in settings")
        return value


class GleamFetchSettings(PullFetchSettings):
    """GLEAM yearly files from its SFTP server (credentials: GLEAM_SFTP_USERNAME/_PASSWORD or .netrc);
    ``url`` is the server, e.g. ``sftp://hydras.ugent.be:2225`` (the address comes with the registration)."""

    cron: str = "0 7 * * 1"
    #: Files below ``url``: ``{version}`` and ``{year}`` match any version (``v3.8a``, ``v4.2a``)
    #: and year, so new years and new versions are picked up.
    path_pattern: str = "/data/{version}/daily/{year}/E_{year}_GLEAM_{version}.nc"


class RemoteFetchSettings(PullFetchSettings):
    """A generic pull from any fsspec URL (``sftp://``, ``s3://``, an ``https://`` listing).

    Credentials: ETFUSE_REMOTE_USERNAME/_PASSWORD, or the host's ``.netrc`` entry; S3 keys the
    usual AWS way.
    """

    #: Shell pattern of file names below ``url`` to fetch (``*`` does not cross ``/``).
    pattern: str = "*"
    #: Search sub-folders of ``url`` too.
    recursive: bool = False
    #: The landing folder the files go to (a reader's name: ``cma``, ``stations`` ...).
    target: str = "cma"


class FetchSettings(_Section):
    """``etfuse fetch``: bring each provider's new files into ``landing/<source>/``; see docs/operations.md."""

    era5land: Era5LandFetchSettings = Era5LandFetchSettings()
    modis: ModisFetchSettings = ModisFetchSettings()
    gleam: GleamFetchSettings = GleamFetchSettings()
    remote: RemoteFetchSettings = RemoteFetchSettings()
    #: Download block size [bytes] (progress and stall checks happen once per block).
    block_bytes: int = Field(1 << 20, ge=1024)
    #: ``.env`` file read for credentials (variables already set win); None = ``./.env``.
    env_file: Path | None = None


class EvaluationSettings(_Section):
    """The evaluation protocol (training/protocol): blocked cross-validation, final test, bootstrap;
    see docs/model-card.md."""

    #: Folds of the spatially blocked cross-validation over station groups.
    folds: int = Field(5, ge=2, le=50)
    #: Side of the square spatial blocks that group stations; at least the error correlation
    #: length of the sources (about 50-150 km), so a held-out block is not predicted by a
    #: neighbour sharing its errors [km].
    block_km: float = Field(150.0, gt=0)
    #: Share of spatial blocks whose stations form the final test set (never trained on,
    #: never used for early stopping, selection or the gate).
    final_test_fraction: float = Field(0.2, ge=0, lt=1)
    #: Explicit final-test stations (ids); when given they replace ``final_test_fraction``.
    final_test_stations: tuple[str, ...] = ()
    #: First day of the final test period; None = the last ``final_test_period_fraction`` of the days.
    final_test_start: date | None = None
    #: Share of the period kept as the final test period when ``final_test_start`` is None.
    final_test_period_fraction: float = Field(0.2, ge=0, lt=1)
    #: Length of the time blocks of the block bootstrap (errors are autocorrelated over days) [days].
    bootstrap_block_days: int = Field(30, ge=1)
    #: Bootstrap resamples for the 95 % intervals.
    bootstrap_samples: int = Field(1000, ge=50)
    #: Epochs and early-stopping patience of the GCN-GRU inside cross-validation (each fold trains
    #: one model, so these bound the protocol's cost); None = ``training.epochs`` / ``patience``.
    #: 12/3 keep a 2-year, whole-province protocol (5 folds + final fit) within about 15 minutes
    #: on 2 cores (docs/model-card.md); the best epoch is then usually the 11th or 12th: the fits
    #: are near, not at, convergence.
    cv_epochs: int | None = Field(12, ge=1)
    cv_patience: int | None = Field(3, ge=1)
    #: Minimum distance from every training station for the "away from stations" truth score [km].
    away_km: float = Field(20.0, ge=0)
    seed: int = 0


class LedgerSettings(_Section):
    """Where the harmonised store's and the product's ledgers live (etfuse/ledgerdb.py); see
    docs/operations.md, "Ledgers in PostgreSQL".

    The URL may carry a password: it is left out of ``repr`` and of ``model_dump``/``to_yaml`` and
    never written to logs or errors (set it through ``ETFUSE_LEDGER__URL``)."""

    #: ``postgresql://user:password@host:5432/db``: both ledgers in this database, one schema per
    #: ledger and data root; None (default) = ``ledger.sqlite`` files beside the data (embedded).
    url: str | None = Field(None, repr=False, exclude=True)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("ledger.url: expected a postgresql:// URL (or nothing for SQLite files)")
        return value


class Settings(BaseSettings):
    """Everything the system can be told; see docs/configuration.md."""

    # hide_input_in_errors: a refused value may be a secret (a URL with a password, a webhook token)
    model_config = SettingsConfigDict(env_prefix="ETFUSE_", env_nested_delimiter="__",
                                      extra="forbid", frozen=True, hide_input_in_errors=True)

    #: Runtime root; every runtime folder (docs/architecture.md) lives below it.
    home: Path = Path("var")
    region: RegionSettings = RegionSettings()
    #: Days of input the GCN-GRU sees per prediction [days].
    window_days: int = Field(7, ge=1, le=60)
    cma: CmaSettings = CmaSettings()
    fluxnet: FluxnetSettings = FluxnetSettings()
    modis: ModisSettings = ModisSettings()
    lst: LstSettings = LstSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    serving: ServingSettings = ServingSettings()
    mlflow: MlflowSettings = MlflowSettings()
    prefect: PrefectSettings = PrefectSettings()
    alerts: AlertSettings = AlertSettings()
    freshness: FreshnessSettings = FreshnessSettings()
    update: UpdateSettings = UpdateSettings()
    watch: WatchSettings = WatchSettings()
    fetch: FetchSettings = FetchSettings()
    static: StaticSettings = StaticSettings()
    ingest: IngestSettings = IngestSettings()
    quality: QualitySettings = QualitySettings()
    training: TrainingSettings = TrainingSettings()
    distribution: DistributionSettings = DistributionSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    ledger: LedgerSettings = LedgerSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("region", mode="before")
    @classmethod
    def _region_by_name(cls, value: Any) -> Any:
        """``region: test`` or ``{name: test, resolution_deg: 0.05}`` start from a named region."""
        regions = named_regions()
        if isinstance(value, str):
            if value not in regions:
                raise ValueError(f"unknown region {value!r}; named regions: {sorted(regions)}")
            return {"name": value, **regions[value]}
        if isinstance(value, dict) and value.get("name") in regions:
            return {"name": value["name"], **regions[value["name"]], **value}
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource):
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_path = _yaml_file.get()
        if yaml_path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path))
        return tuple(sources)

    # -- runtime folders -------------------------------------------------------------------
    def folder(self, name: str) -> Path:
        """One of the runtime folders of docs/architecture.md (not created here)."""
        if name not in RUNTIME_FOLDERS:
            raise KeyError(f"unknown runtime folder {name!r}; expected one of {RUNTIME_FOLDERS}")
        return self.home / name

    @property
    def landing(self) -> Path:
        return self.folder("landing")

    @property
    def harmonised(self) -> Path:
        return self.folder("harmonised")

    def ensure_folders(self) -> None:
        for name in RUNTIME_FOLDERS:
            self.folder(name).mkdir(parents=True, exist_ok=True)

    @property
    def mlflow_tracking_uri(self) -> str:
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return f"sqlite:///{(self.folder('mlflow') / 'mlflow.db').resolve()}"

    def to_yaml(self) -> str:
        """The resolved configuration, e.g. to store beside a run."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build settings from an optional YAML file, ``ETFUSE_*`` variables and ``overrides``."""
    path = config_file if config_file is not None else os.environ.get("ETFUSE_CONFIG")
    yaml_path = Path(path) if path else None
    if yaml_path is not None and not yaml_path.is_file():
        raise FileNotFoundError(f"config file {yaml_path} does not exist (from --config or ETFUSE_CONFIG)")
    token = _yaml_file.set(yaml_path)
    try:
        return Settings(**overrides)
    finally:
        _yaml_file.reset(token)
