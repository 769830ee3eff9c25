"""One typed settings object for the whole system.

Values come, in rising priority, from the defaults below, a YAML file (``--config`` or
``ETFUSE_CONFIG``), ``ETFUSE_*`` environment variables (nested keys joined by ``__``, e.g.
``ETFUSE_REGION__RESOLUTION_DEG=0.05``) and keyword overrides.  Unknown keys are rejected so a
typo in a config file fails loudly instead of silently keeping a default.
"""

from __future__ import annotations

import contextvars
import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import YamlConfigSettingsSource

RUNTIME_FOLDERS = ("landing", "archive", "quarantine", "harmonised", "product", "mlflow",
                   "alerts", "reports", "cache")

_yaml_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("etfuse_yaml", default=None)


def named_regions() -> dict[str, dict[str, Any]]:
    """Regions shipped in ``etfuse/data/regions.yaml`` (edges [degrees], resolution [degrees])."""
    text = resources.files("etfuse.data").joinpath("regions.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


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


class ModisSettings(_Section):
    """MOD11A1 quality screening and the lat/lon grid the sinusoidal tiles are resampled to."""

    #: Keep pixels whose mandatory QA (QC bits 0-1) is 01 "other quality" as well as 00 "good".
    accept_other_quality: bool = True
    #: Highest accepted LST error flag (QC bits 6-7): 0 <= 1 K, 1 <= 2 K, 2 <= 3 K, 3 > 3 K.
    max_lst_error_flag: int = Field(1, ge=0, le=3)
    #: Cell size of the lat/lon grid HDF tiles are reprojected to [degrees]; None = region's.
    grid_resolution_deg: float | None = Field(None, gt=0)


class LstSettings(_Section):
    """Where MODIS LST is missing the model gets ERA5-Land skin temperature instead, flagged.

    MODIS Terra's daytime LST (about 10:30 local) runs warmer than ERA5-Land's daily-mean ``skt``;
    the fallback adds the day's median (LST - skt) over cells where both exist, or this default
    offset when fewer than ``min_overlap_cells`` cells overlap.
    """

    fallback_default_offset_k: float = 8.0
    min_overlap_cells: int = Field(50, ge=1)


class QualitySettings(_Section):
    """Validation thresholds (Great Expectations suites in etfuse/quality); see docs/validation.md."""


class TrainingSettings(_Section):
    """GCN-GRU training; see docs/model-card.md."""


class MlflowSettings(_Section):
    #: None = embedded default: ``sqlite:///$ETFUSE_HOME/mlflow/mlflow.db``.
    tracking_uri: str | None = None
    experiment_name: str = "etfuse"
    registered_model_name: str = "etfuse-gcn-gru"


class PrefectSettings(_Section):
    #: None = Prefect's ephemeral API (no server); set to e.g. http://127.0.0.1:4200/api.
    api_url: str | None = None


class AlertSettings(_Section):
    webhook_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str | None = None
    smtp_to: tuple[str, ...] = ()
    #: Identical problems within this window [minutes] are grouped into one alert.
    group_window_minutes: int = Field(60, ge=0)


class Settings(BaseSettings):
    """Everything the system can be told; see docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="ETFUSE_", env_nested_delimiter="__",
                                      extra="forbid", frozen=True)

    #: Runtime root; every folder of design.md §2 lives below it.
    home: Path = Path("var")
    region: RegionSettings = RegionSettings()
    #: Days of input the GCN-GRU sees per prediction [days].
    window_days: int = Field(7, ge=1, le=60)
    cma: CmaSettings = CmaSettings()
    modis: ModisSettings = ModisSettings()
    lst: LstSettings = LstSettings()
    mlflow: MlflowSettings = MlflowSettings()
    prefect: PrefectSettings = PrefectSettings()
    alerts: AlertSettings = AlertSettings()
    quality: QualitySettings = QualitySettings()
    training: TrainingSettings = TrainingSettings()
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
        """One of the runtime folders of design.md §2 (not created here)."""
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
