"""napari reader: an experiment folder (``manifest.csv``) as calibrated layers.

For every position of the manifest (:mod:`data_prep.core.manifest`) it gives:

- the movie, an image layer named after the position key, (T, H, W), with scale (frame
  interval in minutes, pixel size in um, pixel size in um) and those units, so positions,
  heat maps and Grad-CAM layers line up in world coordinates;
- with the simulator's ground truth (the ``ground_truth`` column): the cell ids
  (``labels.tif``) as a labels layer ``KEY cells``, and the sick mask (``sick.tif``) as a
  labels layer ``KEY sick`` with 1 = healthy cell, 2 = sick cell, 0 = no cell (the file's
  0 / 1 / 255 shifted so that "no cell" is napari's transparent background).

The movies are read whole into memory (:func:`data_prep.core.stack.read_stack`, which also
checks them; the manifest's channel column picks the channel).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_prep.core.manifest import MANIFEST_NAME, Position, read_manifest

#: Axis units of every layer the plugin makes: time in minutes, lengths in micrometres.
UNITS = ("min", "um", "um")
AXIS_LABELS = ("t", "y", "x")


def experiment_root(path) -> Path | None:
    """The experiment folder that ``path`` names (the folder or its manifest.csv), or None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.is_dir() and (p / MANIFEST_NAME).is_file():
        return p
    if p.name == MANIFEST_NAME and p.is_file():
        return p.parent
    return None


def get_reader(path):
    """npe2 reader hook: :func:`read_experiment` for an experiment folder, else None."""
    return read_experiment if experiment_root(path) is not None else None


def position_scale(pos: Position) -> tuple[float, float, float]:
    """(minutes per frame, um per pixel, um per pixel) of a manifest row."""
    return (pos.frame_interval_min, pos.pixel_size_um, pos.pixel_size_um)


def sick_labels(sick: np.ndarray) -> np.ndarray:
    """The simulator's sick mask (0 healthy, 1 sick, 255 no cell) as labels 1, 2, 0."""
    from data_prep.sim.truth import SICK_HEALTHY, SICK_SICK

    out = np.zeros(sick.shape, np.uint8)
    out[sick == SICK_HEALTHY] = 1
    out[sick == SICK_SICK] = 2
    return out


def read_experiment(path) -> list[tuple]:
    """Layer data of every position of an experiment (see the module docstring).

    Returns
    -------
    list of (data, kwargs, layer type) tuples, napari's ``LayerDataTuple``.
    """
    import tifffile

    from data_prep.core.stack import MANIFEST_CHANNEL, read_stack

    layers: list[tuple] = []
    for pos in read_manifest(experiment_root(path)):
        movie = read_stack(pos.path, pos.channel, channel_source=MANIFEST_CHANNEL)
        common = {"scale": position_scale(pos), "units": UNITS, "axis_labels": AXIS_LABELS}
        meta = {"position": pos.key, "dose_s": pos.dose_s, "path": str(pos.path)}
        layers.append((movie, {"name": pos.key, "metadata": meta, **common}, "image"))
        gt = pos.ground_truth
        if gt is None or not (gt / "labels.tif").is_file():
            continue
        cells = tifffile.imread(gt / "labels.tif")
        layers.append((cells, {"name": f"{pos.key} cells", "visible": False, **common}, "labels"))
        if (gt / "sick.tif").is_file():
            sick = sick_labels(tifffile.imread(gt / "sick.tif"))
            kw = {"name": f"{pos.key} sick", "opacity": 0.4, **common}
            layers.append((sick, kw, "labels"))
    return layers
