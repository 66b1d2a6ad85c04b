"""Network diagrams in the style of TensorFlow Playground (matplotlib, Agg canvas).

Columns are the inputs (x, y), the three hidden layers and the output. Every
unit that the mask keeps is a small tile showing its activation over the
visualisation square (a low-resolution grid): inputs and the output logit on
an orange-white-blue scale, hidden units' post-ReLU activation white to blue,
each normalised to its own maximum. Live weights are lines, blue for positive
and orange for negative, their width scaled by |w|. Following §G.1, weights on
no input-output path (disconnected) are dashed grey, structurally dead units
have a red outline, and units whose pre-activation is <= 0 on every training
point (dead on the data) a dashed purple one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from cubist import masks as mask_ops
from cubist.mlp import Params
from search.report import models

POSITIVE, NEGATIVE, NEUTRAL = "#0877bd", "#f59322", "#e8eaeb"
DIVERGING = LinearSegmentedColormap.from_list("playground", (NEGATIVE, NEUTRAL, POSITIVE))
ACTIVATION = LinearSegmentedColormap.from_list("activation", ("#ffffff", POSITIVE))
HALF_WIDTH = 2.25


def path_structure(edges) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """Per layer, bool (out, in) effective edges; per hidden layer, bool (w,) live units.

  edges: the four bool (out, in) matrices of nonzero weights. A weight is
  effective iff its input is reachable from the inputs and its output reaches
  the output (§G.1); a hidden unit is live iff it is both.
  """
  forward = [np.ones(edges[0].shape[1], bool)]
  for edge in edges:
    forward.append((edge & forward[-1][None, :]).any(axis=1))
  backward = [np.ones(edges[3].shape[0], bool)]
  for edge in reversed(edges):
    backward.insert(0, (edge & backward[0][:, None]).any(axis=0))
  effective = [
    edge & forward[l][None, :] & backward[l + 1][:, None] for l, edge in enumerate(edges)
  ]
  live = [forward[l] & backward[l] for l in range(1, 4)]
  return effective, live


def _columns(masks: Params) -> list[np.ndarray]:
  """Unit indices drawn per column: inputs, present hidden units, output."""
  present = mask_ops.used_units(masks)
  return [np.arange(2)] + [np.flatnonzero(p) for p in present] + [np.arange(1)]


def draw_network(
  params: Params, masks: Params, title: str, path, inactive=None, resolution: int = 64
) -> Path:
  """Draw one sparse network to `path` (PNG).

  params: trained weights at width w (masked values are ignored); masks: bool
  at w; inactive: optional per-hidden-layer bool (w,) of data-dead units.
  """
  params = tuple(
    type(l)(
      np.asarray(l.weight, np.float32) * np.asarray(m.weight),
      np.asarray(l.bias, np.float32) * np.asarray(m.bias),
    )
    for l, m in zip(params, masks)
  )
  edges = [layer.weight != 0 for layer in params]
  effective, live = path_structure(edges)
  columns = _columns(masks)
  hidden_images, logit_image = models.unit_images(params, resolution)
  axis = np.linspace(-HALF_WIDTH, HALF_WIDTH, resolution, dtype=np.float32)
  input_images = [np.tile(axis, (resolution, 1)), np.tile(axis[::-1, None], (1, resolution))]

  tallest = max(max(len(c) for c in columns), 2)
  gap, half = 3.2, 0.4
  position = {}
  for l, units in enumerate(columns):
    offsets = (np.arange(len(units)) - (len(units) - 1) / 2)[::-1]
    for unit, offset in zip(units, offsets):
      position[(l, int(unit))] = (l * gap, float(offset))

  figure = Figure(figsize=(7.0, min(max(2.6, 0.42 * tallest + 1.0), 14.0)))
  ax = figure.subplots()
  largest = max((np.abs(layer.weight).max() for layer in params if layer.weight.size), default=1)
  largest = largest if largest > 0 else 1.0
  for l, layer in enumerate(params):
    for j, i in zip(*np.nonzero(edges[l])):
      start, end = position.get((l, int(i))), position.get((l + 1, int(j)))
      if start is None or end is None:
        continue
      value = float(layer.weight[j, i])
      xs, ys = (start[0] + half, end[0] - half), (start[1], end[1])
      if effective[l][j, i]:
        ax.plot(
          xs,
          ys,
          color=POSITIVE if value > 0 else NEGATIVE,
          linewidth=0.4 + 3.0 * abs(value) / largest,
          alpha=0.85,
          zorder=1,
        )
      else:
        ax.plot(xs, ys, color="0.55", linestyle=(0, (3, 2)), linewidth=0.9, zorder=1)

  def tile(l, unit, image, cmap, vmin, vmax):
    x, y = position[(l, unit)]
    ax.imshow(
      image,
      cmap=cmap,
      vmin=vmin,
      vmax=vmax,
      interpolation="nearest",
      zorder=2,
      extent=(x - half, x + half, y - half, y + half),
    )
    ax.add_patch(
      Rectangle(
        (x - half, y - half),
        2 * half,
        2 * half,
        fill=False,
        edgecolor="0.4",
        linewidth=0.6,
        zorder=3,
      )
    )
    if 0 < l < 4:
      if not live[l - 1][unit]:
        ax.add_patch(
          Rectangle(
            (x - half, y - half),
            2 * half,
            2 * half,
            fill=False,
            edgecolor="red",
            linewidth=2.0,
            zorder=4,
          )
        )
      elif inactive is not None and inactive[l - 1][unit]:
        ax.add_patch(
          Rectangle(
            (x - half, y - half),
            2 * half,
            2 * half,
            fill=False,
            edgecolor="purple",
            linestyle="--",
            linewidth=1.6,
            zorder=4,
          )
        )

  for unit, image in enumerate(input_images):
    tile(0, unit, image, DIVERGING, -HALF_WIDTH, HALF_WIDTH)
  for l in range(1, 4):
    for unit in columns[l]:
      image = hidden_images[l - 1][unit]
      tile(l, int(unit), image, ACTIVATION, 0, max(float(np.percentile(image, 99)), 1e-6))
  bound = max(float(np.percentile(np.abs(logit_image), 75)), 1e-6)  # show the sign clearly
  tile(4, 0, np.clip(logit_image, -bound, bound), DIVERGING, -bound, bound)

  for l, name in enumerate(("input", "hidden 1", "hidden 2", "hidden 3", "output")):
    ax.text(
      l * gap,
      (tallest - 1) / 2 + 0.75,
      f"{name}\n({len(columns[l])})",
      ha="center",
      va="bottom",
      fontsize=7,
    )
  ax.set_xlim(-gap / 2, 4 * gap + gap / 2)
  ax.set_ylim(-(tallest - 1) / 2 - 0.9, (tallest - 1) / 2 + 1.5)
  ax.set_aspect("equal")
  ax.set_axis_off()
  ax.set_title(title, fontsize=8)
  figure.text(
    0.5,
    0.01,
    "blue/orange: positive/negative weight (width ~ |w|); dashed grey: "
    "disconnected; red: dead unit; dashed purple: inactive on all training points",
    ha="center",
    fontsize=6,
  )
  path = Path(path)
  figure.savefig(path, dpi=100, bbox_inches="tight")
  return path
