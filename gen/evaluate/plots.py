"""PNG figures: image grids and loss curves."""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image

from gen.train import metrics_io


def image_grid(images: np.ndarray, columns: int | None = None, pad: int = 1) -> np.ndarray:
  """[n, h, w, c] floats in [0, 1] -> one [H, W, c] uint8 grid image."""
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  n, h, w, c = images.shape
  columns = columns or int(math.ceil(math.sqrt(n)))
  rows = int(math.ceil(n / columns))
  grid = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad, c), np.float32)
  for i, image in enumerate(images):
    r, col = divmod(i, columns)
    top, left = pad + r * (h + pad), pad + col * (w + pad)
    grid[top:top + h, left:left + w] = image
  return (grid * 255).round().astype(np.uint8)


def save_image_grid(path: str, images: np.ndarray, columns: int | None = None,
                    scale: int = 2) -> None:
  grid = image_grid(images, columns)
  if grid.shape[-1] == 1:
    grid = grid[..., 0]
  picture = Image.fromarray(grid)
  if scale > 1:  # 28x28 images are too small to look at
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
  picture.save(path)


def save_scatter(path: str, points: np.ndarray, title: str = "",
                 labels: np.ndarray | None = None) -> None:
  """2-D points (toy data, or latents) as a scatter plot, coloured by `labels` if given."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axis = plt.subplots(figsize=(4, 4))
  if labels is None:
    axis.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
  else:
    drawn = axis.scatter(points[:, 0], points[:, 1], s=2, alpha=0.6, c=labels, cmap="tab10")
    figure.colorbar(drawn, ax=axis, label="label")
  axis.set_aspect("equal")
  axis.set_title(title)
  figure.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(figure)


def save_loss_curves(workdir: str, train_key: str = "loss",
                     val_key: str | None = None) -> dict | None:
  """Training's `train_key` and validation's `val_key` (default: the same)
  against step, on one plot: `<workdir>/loss_curve.png`.

  The two keys must name the same quantity on both splits (Family.curve_keys):
  curves of different quantities cross for reasons that are not overfitting.
  Returns {"path", "train": (steps, values), "val": (steps, values)}, or
  None when there are no metrics yet.
  """
  val_key = val_key or train_key
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = metrics_io.read_metrics(path)
  figure, axis = plt.subplots(figsize=(6, 4))
  drawn = {}
  for split, key in (("train", train_key), ("val", val_key)):
    steps, values = metrics_io.curve(rows, split, key)
    drawn[split] = (steps, values)
    if steps:
      axis.plot(steps, values, label=f"{split} {key}",
                marker="o" if split == "val" else None, markersize=3)
  axis.set_xlabel("step")
  axis.set_ylabel(train_key if train_key == val_key else f"{train_key} / {val_key}")
  positive = _all_positive(rows, train_key) and _all_positive(rows, val_key)
  axis.set_yscale("log" if positive else "linear")
  axis.legend()
  axis.grid(alpha=0.3)
  out = os.path.join(workdir, "loss_curve.png")
  figure.savefig(out, dpi=100, bbox_inches="tight")
  plt.close(figure)
  return {"path": out, **drawn}


def _all_positive(rows, key) -> bool:
  values = [r[key] for r in rows if key in r]
  return bool(values) and min(values) > 0


def save_density(path: str, density: np.ndarray, extent: tuple[float, float, float, float],
                 title: str = "") -> None:
  """A density on a regular 2-D grid ([rows = y, columns = x]) as a heat map."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axis = plt.subplots(figsize=(4, 4))
  axis.imshow(density, origin="lower", extent=extent, cmap="viridis")
  axis.set_title(title)
  figure.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(figure)
