"""The gFID plot of a guidance sweep, drawn with Pillow alone (no plotting library at runtime).

x: the first swept setting; one line (and colour) per combination of the other swept settings;
y: gFID with round tick values. Written by `eval_sweep.run_sweep` as RUN_DIR/gfid.png.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .sweep_grid import TITLES

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from .eval_sweep import SweepResult


PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]  # fmt: skip


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high]."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 0.5:
        ticks.append(round(value, 10))
        value += step
    return ticks


def plot_gfid(result: "SweepResult", width: int = 720, height: int = 460) -> "Image.Image":
    """gFID against the first swept setting; one line per combination of the other settings."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, right, top, bottom = 70, width - 190, 40, height - 60
    x_name = result.axis_names[0]
    x_values = list(dict.fromkeys(row.settings[x_name] for row in result.rows))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x_values)
    if numeric and len(x_values) > 1:
        x_low, x_high = min(x_values), max(x_values)
        pad = (x_high - x_low) * 0.05
        x_low, x_high = x_low - pad, x_high + pad
        to_x = lambda v: left + (v - x_low) / (x_high - x_low) * (right - left)
    else:
        slots = {v: i for i, v in enumerate(x_values)}
        to_x = lambda v: left + (slots[v] + 0.5) / len(x_values) * (right - left)
    fids = [row.result.fid for row in result.rows]
    ticks = _nice_ticks(min(fids), max(fids))
    y_low, y_high = ticks[0], ticks[-1] if ticks[-1] > ticks[0] else ticks[0] + 1
    to_y = lambda v: bottom - (v - y_low) / (y_high - y_low) * (bottom - top)
    # axes, grid lines and tick labels
    draw.line([(left, top), (left, bottom), (right, bottom)], fill="black", width=1)
    for t in ticks:
        y = to_y(t)
        draw.line([(left - 4, y), (right, y)], fill=(225, 225, 225))
        draw.line([(left - 4, y), (left, y)], fill="black")
        text = f"{t:g}"
        draw.text((left - 8 - draw.textlength(text, font=font), y - 6), text, fill="black", font=font)
    for v in x_values:
        x = to_x(v)
        draw.line([(x, bottom), (x, bottom + 4)], fill="black")
        text = f"{v:g}" if numeric else str(v)
        draw.text((x - draw.textlength(text, font=font) / 2, bottom + 8), text, fill="black", font=font)
    x_title = TITLES[x_name]
    draw.text(((left + right) / 2 - draw.textlength(x_title, font=font) / 2, bottom + 30), x_title, fill="black",
              font=font)  # fmt: skip
    draw.text((10, top - 28), f"gFID vs {x_title}", fill="black", font=font)
    draw.text((10, top - 14), "gFID", fill="black", font=font)
    # one line per combination of the other settings
    others = result.axis_names[1:]
    lines: dict[tuple, list[tuple[Any, float]]] = {}
    for row in result.rows:
        lines.setdefault(tuple(row.settings[n] for n in others), []).append((row.settings[x_name], row.result.fid))
    for i, (key, points) in enumerate(lines.items()):
        colour = PALETTE[i % len(PALETTE)]
        xy = [(to_x(v), to_y(f)) for v, f in sorted(points, key=lambda p: x_values.index(p[0]))]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for x, y in xy:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour, outline="black")
        label = ", ".join(f"{TITLES[n]} {v}" for n, v in zip(others, key)) or "gFID"
        ly = top + 8 + 18 * i
        draw.line([(right + 15, ly + 6), (right + 35, ly + 6)], fill=colour, width=2)
        draw.ellipse([right + 21, ly + 2, right + 29, ly + 10], fill=colour, outline="black")
        draw.text((right + 42, ly), label, fill="black", font=font)
    return image


__all__ = ["PALETTE", "plot_gfid"]
