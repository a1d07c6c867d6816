"""Tiny learnable LMDBs and a small net of the published layer types, for the training tests.

The nets keep the published layer types and transform (Data with mean_value / scale,
Convolution, BatchNorm, Scale, ReLU, Pooling, InnerProduct, Dropout, SoftmaxWithLoss,
Accuracy) at a size that trains in a second on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import lmdb
import numpy as np

from data_prep.core import paper

SIDE = 16  # stored crop side of the tiny LMDBs
CROP = 12  # net input side (random crop in TRAIN, centre crop in TEST, as published)


def stripes(label: int, rng: np.random.Generator, side: int = SIDE) -> np.ndarray:
    """A (side, side) float32 z-scored crop: horizontal stripes (0) or vertical stripes (1)."""
    period = rng.integers(3, 6)
    phase = rng.uniform(0, 2 * np.pi)
    ramp = np.sin(2 * np.pi * np.arange(side) / period + phase)
    img = np.tile(ramp[:, None], (1, side)) if label == 0 else np.tile(ramp[None, :], (side, 1))
    img = img + 0.3 * rng.standard_normal((side, side))
    return ((img - img.mean()) / img.std()).astype(np.float32)


def write_lmdb(
    path: Path, labels: list[int], rng: np.random.Generator, keys=None, side: int = SIDE
) -> Path:
    """Write Datum records (float_data v = 32767 + 4000 z, 1 x side x side) with ``labels``."""
    from caffe.proto import caffe_pb2

    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i, label in enumerate(labels):
            z = stripes(label, rng, side)
            datum = caffe_pb2.Datum(channels=1, height=side, width=side, label=int(label))
            datum.float_data.extend((paper.DATA_MEAN_VALUE + paper.DATUM_Z_SCALE * z).ravel())
            key = keys[i] if keys is not None else f"{i:08d}"
            txn.put(key.encode(), datum.SerializeToString())
    env.close()
    return path


def write_dataset(
    out: Path, n_train: int, n_test: int, seed: int = 0, side: int = SIDE, test_keys=None
) -> Path:
    """A dataset folder with balanced ``train.lmdb`` and ``test.lmdb`` (labels 0, 1, 0, ...)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    write_lmdb(out / "train.lmdb", [i % 2 for i in range(n_train)], rng, side=side)
    write_lmdb(out / "test.lmdb", [i % 2 for i in range(n_test)], rng, test_keys, side)
    return out


def _data(phase: str, source: str, batch: int, crop: int) -> str:
    return f"""layer {{ name: "data" type: "Data" top: "data" top: "label"
  include {{ phase: {phase} }}
  transform_param {{ crop_size: {crop} mean_value: {paper.DATA_MEAN_VALUE}
                    scale: {paper.DATA_SCALE} }}
  data_param {{ source: "{source}" batch_size: {batch} backend: LMDB }} }}
"""


def train_val(batch: int = 8, dropout: bool = True, crop: int = CROP) -> str:
    """The tiny train_val net text; Data sources are the relative ``train.lmdb`` / ``test.lmdb``."""
    drop = (
        'layer { name: "drop1" type: "Dropout" bottom: "fc1" top: "fc1"\n'
        "  dropout_param { dropout_ratio: 0.5 } include { phase: TRAIN } }\n"
        if dropout
        else ""
    )
    return (
        'name: "tiny"\n'
        + _data("TRAIN", "train.lmdb", batch, crop)
        + _data("TEST", "test.lmdb", batch, crop)
        + """layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
  param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 }
  param { lr_mult: 0 decay_mult: 0 }
  batch_norm_param { use_global_stats: false moving_average_fraction: 0.95 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1"
  scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc1" type: "InnerProduct" bottom: "pool1" top: "fc1"
  inner_product_param { num_output: 8
    weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "relu2" type: "ReLU" bottom: "fc1" top: "fc1" }
"""
        + drop
        + """layer { name: "score" type: "InnerProduct" bottom: "fc1" top: "score"
  inner_product_param { num_output: 2
    weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "score" bottom: "label" top: "accuracy" }
"""
    )


def deploy(crop: int = CROP) -> str:
    """The tiny net's deploy form: Input, BatchNorm with global statistics, Softmax ``prob``."""
    body = train_val(dropout=False).split('layer { name: "conv1"', 1)[1]
    body = body.split('layer { name: "loss"', 1)[0]
    body = body.replace("use_global_stats: false", "use_global_stats: true")
    return (
        'name: "tiny"\nlayer { name: "data" type: "Input" top: "data"\n'
        f"  input_param {{ shape {{ dim: 1 dim: 1 dim: {crop} dim: {crop} }} }} }}\n"
        'layer { name: "conv1"' + body + 'layer { name: "prob" type: "Softmax" bottom: "score" '
        'top: "prob" }\n'
    )


def write_solver(folder: Path, max_iter: int = 60, base_lr: float = 0.01, **extra) -> Path:
    """Write ``train_val.prototxt`` and a Nesterov/inv ``solver.prototxt`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train_val.prototxt").write_text(train_val(**extra))
    (folder / "deploy.prototxt").write_text(deploy())
    (folder / "solver.prototxt").write_text(
        f"""net: "train_val.prototxt"
test_iter: 2
test_interval: 20
base_lr: {base_lr}
lr_policy: "{paper.LR_POLICY}"
gamma: {paper.LR_GAMMA}
power: {paper.LR_POWER}
momentum: {paper.MOMENTUM}
weight_decay: {paper.WEIGHT_DECAY_A}
type: "{paper.SOLVER_TYPE}"
display: 10
max_iter: {max_iter}
snapshot: 1000
snapshot_prefix: "published"
solver_mode: GPU
"""
    )
    return folder / "solver.prototxt"
