"""Quicklook PNG of one product day: fixed 0-6 mm colour scale, region outline, legend.

Drawn with matplotlib's object API on the Agg canvas (no pyplot state), so it is safe to call
from several threads of the HTTP API.  The full province grid (850 x 1390) is block-averaged to at
most ``max_pixels`` cells on its longer side before drawing: a 0.01 deg field is wider than the
picture anyway, and drawing 1.2 M cells would only cost time.

The PNG carries the product day's provenance in text chunks (``etfuse_file_sha256`` among them),
which is how :meth:`serving.product.ProductStore.quicklook` knows whether a picture is up to date.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from etfuse.tempfiles import temporary_name

#: Fixed colour scale [mm day-1]: days and seasons stay comparable; values above are drawn in the
#: top colour (the colour bar's arrow says so).
VMIN_MM = 0.0
VMAX_MM = 6.0
CMAP = "viridis"
#: the interval width's map: its own fixed scale [mm day-1] and colour map
WIDTH_VMAX_MM = 4.0
WIDTH_CMAP = "magma_r"
NO_VALUE_COLOUR = "#d9d9d9"
MAX_PIXELS = 700
FIGURE_HEIGHT_IN = 6.0
MIN_FIGURE_WIDTH_IN = 6.4
MAX_FIGURE_WIDTH_IN = 12.0
DPI = 100


def block_mean(field: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor x factor`` blocks ignoring NaN (partial blocks at the edges included)."""
    if factor <= 1:
        return np.asarray(field, dtype=np.float32)
    rows, cols = field.shape
    pr, pc = (-rows) % factor, (-cols) % factor
    padded = np.pad(np.asarray(field, dtype=np.float32), ((0, pr), (0, pc)), constant_values=np.nan)
    blocks = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor)
    valid = np.isfinite(blocks)
    total = np.where(valid, blocks, 0).sum(axis=(1, 3), dtype=np.float64)
    count = valid.sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


def render(path: Path, et_mm: np.ndarray, bbox: tuple[float, float, float, float], *, title: str,
           subtitle: str = "", metadata: Mapping[str, str] | None = None, max_pixels: int = MAX_PIXELS,
           width_mm: np.ndarray | None = None) -> Path:
    """Draw ``et_mm`` (rows north to south) over ``bbox`` = (west, south, east, north) into ``path``;
    with ``width_mm`` (the 90 % interval's width, q95 - q05) a second map of it beside the first.

    Written to a temporary name in the same folder, fsync'ed and renamed: a reader sees the old
    picture or the new one, never half of one.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.ticker import MaxNLocator
    import matplotlib as mpl

    path = Path(path)
    west, south, east, north = bbox
    factor = max(1, math.ceil(max(et_mm.shape) / max_pixels))
    shown = block_mean(et_mm, factor)

    # the figure follows the map's shape: the map fills its height, the colour bar sits beside it
    map_aspect = (east - west) * math.cos(math.radians((south + north) / 2)) / (north - south)
    height = FIGURE_HEIGHT_IN
    panels = 1 if width_mm is None else 2
    width = min(MAX_FIGURE_WIDTH_IN * panels, max(MIN_FIGURE_WIDTH_IN, 0.8 * height * map_aspect + 2.4) * panels)
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, panels, 1)
    cmap = mpl.colormaps[CMAP].with_extremes(bad=NO_VALUE_COLOUR)
    image = ax.imshow(np.ma.masked_invalid(shown), extent=(west, east, south, north), origin="upper",
                      cmap=cmap, vmin=VMIN_MM, vmax=VMAX_MM, interpolation="nearest")
    # degrees of longitude are shorter than degrees of latitude away from the equator
    ax.set_aspect(1.0 / max(0.2, math.cos(math.radians((south + north) / 2))))
    ax.add_patch(Rectangle((west, south), east - west, north - south, fill=False, edgecolor="black",
                           linewidth=1.2, label="region (grid extent)"))
    pad_x, pad_y = 0.02 * (east - west), 0.02 * (north - south)
    ax.set_xlim(west - pad_x, east + pad_x)
    ax.set_ylim(south - pad_y, north + pad_y)
    ax.xaxis.set_major_locator(MaxNLocator(6))
    ax.yaxis.set_major_locator(MaxNLocator(6))
    ax.set_xlabel("longitude [degrees east]")
    ax.set_ylabel("latitude [degrees north]")
    fig.suptitle(title, fontsize=12)
    if subtitle:
        ax.set_title(subtitle, fontsize=8, color="0.3")
    ax.legend(handles=[*ax.patches, Patch(facecolor=NO_VALUE_COLOUR, edgecolor="0.5", label="no value")],
              loc="upper right", fontsize=8, frameon=True, framealpha=0.9)
    bar = fig.colorbar(image, ax=ax, extend="max", shrink=0.85)
    bar.set_label("ET [mm day-1]")
    if width_mm is not None:
        wx = fig.add_subplot(1, panels, 2, sharex=ax, sharey=ax)
        wimage = wx.imshow(np.ma.masked_invalid(block_mean(width_mm, factor)), extent=(west, east, south, north),
                           origin="upper", cmap=mpl.colormaps[WIDTH_CMAP].with_extremes(bad=NO_VALUE_COLOUR),
                           vmin=0.0, vmax=WIDTH_VMAX_MM, interpolation="nearest")
        wx.set_aspect(ax.get_aspect())
        wx.set_xlabel("longitude [degrees east]")
        wx.set_title("90 % interval width (et_q95 - et_q05)", fontsize=9)
        wbar = fig.colorbar(wimage, ax=wx, extend="max", shrink=0.85)
        wbar.set_label("interval width [mm day-1]")

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as handle:
            fig.savefig(handle, format="png", dpi=DPI, metadata={"Software": "etfuse", **(metadata or {})})
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def png_text(path: Path) -> dict[str, str]:
    """The text chunks of a PNG (empty when the file is missing or not a PNG)."""
    try:
        from PIL import Image
        with Image.open(path) as image:
            return dict(getattr(image, "text", {}) or {})
    except (OSError, ValueError):
        return {}
