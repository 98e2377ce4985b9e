"""Pictures for people: image grids with labels and simple line plots (PNG, no matplotlib)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facevid.io.arrays import to_uint8
from facevid.io.image import labelled_grid, write_image


def save_grid(rows: list[list[np.ndarray]], path: str | Path, columns: list[str], cell: int = 128) -> Path:
    """A labelled grid (io.image.labelled_grid) of float or uint8 images, written as a PNG."""
    return write_image(path, labelled_grid([[to_uint8(image) for image in row] for row in rows], columns, cell))


COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]


def _panel(series: dict[str, tuple[np.ndarray, np.ndarray]], title: str, size=(480, 260), log=False) -> np.ndarray:
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 50, 10, 24, 24
    cv2.putText(img, title, (left, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    xs = np.concatenate([s[0] for s in series.values()]) if series else np.array([0.0, 1.0])
    ys = np.concatenate([s[1] for s in series.values()]) if series else np.array([0.0, 1.0])
    ys = np.log10(np.maximum(ys, 1e-8)) if log else ys
    x0, x1 = float(xs.min()), float(xs.max()) or 1.0
    y0, y1 = float(np.nanmin(ys)), float(np.nanmax(ys))
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 1, y1 + 1
    cv2.rectangle(img, (left, top), (w - right, h - bottom), (0, 0, 0), 1)
    for value, y in ((y1, top), (y0, h - bottom)):
        text = f"{10 ** value:.3g}" if log else f"{value:.3g}"
        cv2.putText(img, text, (2, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"step {x1:.0f}", (w - right - 70, h - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    for k, (name, (x, y)) in enumerate(series.items()):
        y = np.log10(np.maximum(y, 1e-8)) if log else y
        px = left + (x - x0) / max(x1 - x0, 1e-9) * (w - left - right)
        py = h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)
        pts = np.stack([px, py], 1).round().astype(np.int32)
        colour = COLOURS[k % len(COLOURS)]
        cv2.polylines(img, [pts], False, colour, 1, cv2.LINE_AA)
        cv2.putText(img, name, (left + 6 + 90 * (k % 4), top + 14 + 12 * (k // 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.35, colour, 1, cv2.LINE_AA)
    return img


def save_training_plot(history: list[dict], path: str | Path, rate_target: float | None = None) -> Path:
    """Losses (log scale) and bits per frame over steps, from training log records."""
    steps = np.array([r["step"] for r in history], float)

    def series(keys):
        return {k: (steps, np.array([r.get(k, np.nan) for r in history], float))
                for k in keys if history and k in history[0]}

    losses = _panel(series(["warp", "flow", "diffusion", "landmarks", "keypoints", "total"]), "losses", log=True)
    bits = series(["bits_soft", "bits_hard"])
    if rate_target is not None and len(steps):
        bits["target"] = (steps, np.full(len(steps), rate_target))
    rate = _panel(bits, "bits per frame")
    psnr = _panel(series(["warp_psnr"]), "warped reference PSNR (dB)")
    return write_image(path, np.concatenate([losses, rate, psnr], axis=0))
