"""BatchNorm statistics for deployment, re-estimated on un-augmented windows.

The published nets normalise with BatchNorm. In training (and in the published val net,
whose BatchNorm layers use batch statistics: the paper's accuracy is measured that way) each
batch is normalised by its own mean and variance; a deploy net (heat maps, Grad-CAM, report,
classify) uses the running averages that Caffe kept during training instead
(``use_global_stats: true``, see ``prototxt/deploy.prototxt``).

Those averages describe the *training* crops. Data Set B's are augmented with additive noise
(section 2.3 n: sigma 0.5 after the per-crop normalisation) and blur, which a deploy input
never has, so with them the fine-tuned demo B net calls every clean crop sick (global-
statistics accuracy 50.3% against 73.7% with batch statistics; docs/datasets.md). This module
re-estimates them the way Caffe computes them, on the inputs the deploy net will see: every
BatchNorm layer is switched to batch statistics with ``moving_average_fraction`` 1 (so that
its three blobs accumulate the plain sum of batch means, batch variances and the batch
count, which Caffe's deploy mode divides out), its blobs are zeroed, and shuffled batches of
un-augmented windows of the *training* positions (never a test position) are run forward.
No weight changes; convolution, Scale and InnerProduct blobs are copied unchanged. This is
"precise BN" (the averages are computed with the final weights rather than collected along
the way) and it is a step the paper does not describe: the demo states it as a derivation.

Which windows matter. The net was trained on class-balanced batches, so its BatchNorm layers
learnt to separate healthy from sick relative to statistics of a healthy-and-sick mix.
Data Set B lists only the 0-80 s positions, whose windows are mostly healthy; statistics of
those alone made the demo B net call 26% of the unexposed positions' area sick (any-damage
heat-map AUROC 0.914). ``unlisted`` adds the experiment's positions that the dataset does not
list at all (for B, the doses above 80 s; never a test position), whose dying and dead cells
restore the mix: the B demo's baseline fell to 3.6% (AUROC 0.927; with the statistics of
Data Set A's training positions, all doses, 4.3% and 0.926).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from data_prep.core.errors import UserError
from data_prep.core.grids import Grid
from data_prep.core.manifest import read_manifest
from data_prep.core.outdir import output_dir
from data_prep.core.progress import progress_bar
from data_prep.core.runinfo import write_settings
from data_prep.core.stack import MANIFEST_CHANNEL, read_stack
from deadnet_caffe.caffe_env import set_device
from deadnet_caffe.checks import check_image_sources, check_weights
from deadnet_caffe.infer import DEFAULT_BATCH, DEFAULT_MODEL, crop_to_input
from deadnet_caffe.netspec import load_net_param, net_from_param

WEIGHTS_NAME = "weights.caffemodel"  # in the output folder of deadnet bnstats
DEFAULT_WINDOWS = 1200  # windows sampled (60 batches of 20)
DEFAULT_FRAMES = 3  # frames per training position, evenly spaced


def training_positions(experiment: Path, split_csv: Path, unlisted: bool = False) -> list:
    """The manifest positions whose key the dataset's ``split.csv`` puts in the train part,
    and with ``unlisted`` also those it does not list at all (never a test position)."""
    try:
        with open(split_csv, newline="", encoding="utf-8-sig") as fh:
            parts = {row["key"]: row.get("part") for row in csv.DictReader(fh)}
    except (OSError, KeyError, UnicodeDecodeError) as err:
        raise UserError(f"{split_csv}: cannot read the dataset's split ({err}).") from None
    positions = [
        p
        for p in read_manifest(experiment)
        if parts.get(p.key) == "train" or (unlisted and p.key not in parts)
    ]
    if not any(parts.get(p.key) == "train" for p in positions):
        raise UserError(f"{split_csv}: no training position of {experiment} is listed.")
    return positions


def sample_windows(
    positions: Iterable, n_windows: int, frames_per_position: int, rng: np.random.Generator
) -> np.ndarray:
    """Net inputs of ``n_windows`` windows drawn from the inference grid of evenly spaced
    frames of ``positions``: (n, 220, 220) float32, in random order (shuffled across
    frames and positions, as training batches are)."""
    pool = []
    for p in positions:
        stack = read_stack(p.path, p.channel, channel_source=MANIFEST_CHANNEL)
        picks = np.unique(np.linspace(0, len(stack) - 1, frames_per_position).round().astype(int))
        for t in picks:
            frame = stack[t].astype(np.float32)
            grid = Grid.over(*frame.shape)
            w = grid.window
            pool += [(frame, y, x, w) for y, x in grid.offsets()]
    chosen = rng.permutation(len(pool))[:n_windows]
    return np.stack(
        [crop_to_input(f[y : y + w, x : x + w]) for f, y, x, w in (pool[i] for i in chosen)]
    )


def reestimate(
    model: Path,
    weights: Path,
    inputs: np.ndarray,
    out: Path,
    batch: int = DEFAULT_BATCH,
    gpu: int | None = None,
    progress: bool | None = None,
) -> dict:
    """Write ``out``: ``weights`` with every BatchNorm layer's statistics re-estimated on
    ``inputs`` ((N, H, W) float32 net inputs, in the order they are batched); ``progress``
    as in :mod:`data_prep.core.progress` (a bar over the batches).

    Returns ``{layer: {"mean": ..., "var": ...}}``, the mean over channels of each layer's
    new running mean and variance (for the record), and ``batches``.
    """
    set_device(gpu)
    check_weights(model, weights)
    param = load_net_param(model)
    bn = [layer.name for layer in param.layer if layer.type == "BatchNorm"]
    if not bn:
        raise UserError(f"{model}: has no BatchNorm layer to re-estimate.")
    for layer in param.layer:
        if layer.type == "BatchNorm":
            layer.batch_norm_param.use_global_stats = False
            layer.batch_norm_param.moving_average_fraction = 1.0
    net = net_from_param(param, "TEST", name=str(model))
    net.copy_from(str(weights))
    for name in bn:
        for blob in net.params[name]:
            blob.data[...] = 0
    data = net.blobs[net.inputs[0]]
    n = len(inputs) // batch * batch  # whole batches: every batch weighs the same
    if n == 0:
        raise UserError(
            f"re-estimating BatchNorm needs at least {batch} windows, got {len(inputs)}."
        )
    for i in progress_bar(range(0, n, batch), progress=progress, unit="batch", desc="bnstats"):
        z = inputs[i : i + batch]
        if data.data.shape != (len(z), 1, *z.shape[1:]):
            data.reshape(len(z), 1, *z.shape[1:])
            net.reshape()
        data.data[...] = z[:, None]
        net.forward()
    out.parent.mkdir(parents=True, exist_ok=True)
    net.save(str(out))
    stats = {"batches": n // batch}
    for name in bn:
        mean, var, count = (b.data for b in net.params[name])
        stats[name] = {
            "mean": float((mean / count[0]).mean()),
            "var": float((var / count[0]).mean()),
        }
    return stats


@dataclass(frozen=True)
class BnStatsSettings:
    """What ``deadnet bnstats`` re-estimates (its options, by name); saved in settings.json."""

    weights: Path
    experiment: Path
    dataset: Path  # the net's dataset folder: its split.csv names the training positions
    out: Path
    model: Path = DEFAULT_MODEL
    windows: int = DEFAULT_WINDOWS
    frames: int = DEFAULT_FRAMES
    seed: int = 0
    batch: int = DEFAULT_BATCH
    gpu: int | None = None
    unlisted: bool = False  # also the positions the dataset does not list (module docstring)


def write_bnstats(s: BnStatsSettings, progress: bool | None = None) -> dict:
    """Write ``s.out``: :data:`WEIGHTS_NAME` (the weights with re-estimated BatchNorm
    statistics), ``bnstats.json`` (what :func:`reestimate` returns, with ``windows`` and
    ``positions``) and ``settings.json``. Returns the bnstats.json document."""
    positions = training_positions(s.experiment, Path(s.dataset) / "split.csv", s.unlisted)
    check_image_sources(
        [(p.path, p.channel, p.n_frames) for p in positions], channel_source=MANIFEST_CHANNEL
    )
    with output_dir(s.out, "bnstats", [s.experiment, s.dataset, s.model, s.weights]) as tmp:
        rng = np.random.default_rng(s.seed)
        z = sample_windows(positions, s.windows, s.frames, rng)
        stats = reestimate(s.model, s.weights, z, tmp / WEIGHTS_NAME, s.batch, s.gpu, progress)
        stats["windows"] = len(z)
        stats["positions"] = [p.key for p in positions]
        (tmp / "bnstats.json").write_text(json.dumps(stats, indent=2) + "\n")
        write_settings(tmp, asdict(s))
    return stats
