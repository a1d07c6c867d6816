"""Small deploy nets with DeadNet's layer names and geometry, for the inference tests.

``deadnet_deploy`` writes the published layout (conv_d1_1 9x9 pad 0, seven 3x3 pad 1 convs,
each followed in place by BatchNorm (global stats), Scale and ReLU; four 2x2 max pools; fc1,
fc2, score, Softmax ``prob``) with fewer channels so that tests run fast. Weights come from
Caffe's fillers; BatchNorm's stored statistics are set to mean 0, variance 1 (the fillers
leave the scale factor at 0, which Caffe reads as variance 0 and divides by sqrt(eps)).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")

CONV_NAMES = (
    "conv_d1_1",
    "conv_d1_2",
    "conv_d2_1",
    "conv_d2_2",
    "conv_d3_1",
    "conv_d3_2",
    "conv_d4_1",
    "conv_d4_2",
)
POOL_AFTER = {
    "conv_d1_2": "pool_d2_0",
    "conv_d2_2": "pool_d3_0",
    "conv_d3_2": "pool_d4_0",
    "conv_d4_2": "pool_d5_0",
}


def deadnet_deploy(
    widths=(2, 2, 4, 4, 4, 4, 8, 8), fc=16, side=220, batch=1, fully_conv=False
) -> str:
    """Deploy prototxt text with DeadNet's names; ``widths`` are the 8 conv output counts.

    ``fully_conv`` gives the fully convolutional variant (fc1_conv 14 x 14, fc2_conv and
    score_conv 1 x 1, the names deadnet_caffe.surgery maps the fc layers to).
    """
    lines = [
        'name: "deadnet_test"',
        "force_backward: true",
        'layer { name: "data" type: "Input" top: "data" '
        f"input_param {{ shape {{ dim: {batch} dim: 1 dim: {side} dim: {side} }} }} }}",
    ]
    bottom = "data"
    for i, (name, n) in enumerate(zip(CONV_NAMES, widths, strict=True)):
        k, pad = (9, 0) if i == 0 else (3, 1)
        lines.append(
            f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
            f"convolution_param {{ num_output: {n} kernel_size: {k} pad: {pad} stride: 1 "
            'weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.05 } } }'
        )
        for kind, extra in (
            ("BatchNorm", "batch_norm_param { use_global_stats: true }"),
            ("Scale", "scale_param { bias_term: true }"),
            ("ReLU", ""),
        ):
            lines.append(
                f'layer {{ name: "{name}_{kind.lower()}" type: "{kind}" bottom: "{name}" '
                f'top: "{name}" {extra} }}'
            )
        bottom = name
        if name in POOL_AFTER:
            pool = POOL_AFTER[name]
            lines.append(
                f'layer {{ name: "{pool}" type: "Pooling" bottom: "{bottom}" top: "{pool}" '
                "pooling_param { pool: MAX kernel_size: 2 stride: 2 } }"
            )
            bottom = pool
    for name, n, relu in (("fc1", fc, True), ("fc2", fc, True), ("score", 2, False)):
        kind, param = "InnerProduct", "inner_product_param"
        kernel = ""
        if fully_conv:
            kind, param, name = "Convolution", "convolution_param", f"{name}_conv"
            kernel = f"kernel_size: {14 if name == 'fc1_conv' else 1} "
        lines.append(
            f'layer {{ name: "{name}" type: "{kind}" bottom: "{bottom}" top: "{name}" '
            f"{param} {{ num_output: {n} {kernel}"
            'weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0 } } }'
        )
        if relu:
            lines.append(
                f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}'
            )
        bottom = name
    lines.append(f'layer {{ name: "prob" type: "Softmax" bottom: "{bottom}" top: "prob" }}')
    return "\n".join(lines) + "\n"


def make_weights(model: Path, weights: Path, seed: int = 0) -> Path:
    """Instantiate ``model`` with Caffe's fillers (seeded) and save it as ``weights``."""
    import caffe

    caffe.set_mode_cpu()
    caffe.set_random_seed(seed)
    net = caffe.Net(str(model), caffe.TEST)
    for name, layer in zip(net._layer_names, net.layers, strict=True):
        if layer.type == "BatchNorm":
            p = net.params[name]
            p[0].data[...], p[1].data[...], p[2].data[...] = 0.0, 1.0, 1.0  # mean, var, factor
        elif layer.type == "Scale":
            net.params[name][0].data[...] = 1.0
            net.params[name][1].data[...] = 0.0
    net.save(str(weights))
    return weights


def write_net(tmp: Path, seed: int = 0, **kw) -> tuple[Path, Path]:
    """Write a test deploy prototxt and filler weights in ``tmp``; return both paths."""
    model = tmp / "deploy.prototxt"
    model.write_text(deadnet_deploy(**kw))
    return model, make_weights(model, tmp / "weights.caffemodel", seed)


def phase_like(rng: np.random.Generator, h: int, w: int, dtype=np.uint16) -> np.ndarray:
    """A blobby test image: smoothed noise scaled into the dtype's range, (h, w)."""
    from scipy.ndimage import gaussian_filter

    x = gaussian_filter(rng.normal(size=(h, w)), 4.0)
    x = (x - x.min()) / (np.ptp(x) + 1e-12)
    top = 255 if dtype == np.uint8 else 4095
    return (x * top).astype(dtype)


def nopad_deploy(fully_conv: bool = False, side: int = 220) -> str:
    """A net with no padding and even sizes before every pooling, so that its fully
    convolutional variant equals it window by window: 220 -> conv 9 -> 212 -> pool -> 106
    -> conv 3 -> 104 -> pool -> 52 -> conv 3 -> 50 -> pool -> 25 -> fc1 (25 x 25) -> score.
    Output stride 8."""
    lines = [
        'name: "nopad"',
        'layer { name: "data" type: "Input" top: "data" '
        f"input_param {{ shape {{ dim: 1 dim: 1 dim: {side} dim: {side} }} }} }}",
    ]
    bottom = "data"
    for i, k in enumerate((9, 3, 3)):
        name = f"conv{i}"
        lines.append(
            f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
            f"convolution_param {{ num_output: 3 kernel_size: {k} "
            'weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }'
        )
        lines.append(f'layer {{ name: "relu{i}" type: "ReLU" bottom: "{name}" top: "{name}" }}')
        lines.append(
            f'layer {{ name: "pool{i}" type: "Pooling" bottom: "{name}" top: "pool{i}" '
            "pooling_param { pool: MAX kernel_size: 2 stride: 2 } }"
        )
        bottom = f"pool{i}"
    for name, n, k in (("fc1", 8, 25), ("score", 2, 1)):
        if fully_conv:
            kind, param, extra, name = (
                "Convolution",
                "convolution_param",
                f"kernel_size: {k} ",
                (f"{name}_conv"),
            )
        else:
            kind, param, extra = "InnerProduct", "inner_product_param", ""
        lines.append(
            f'layer {{ name: "{name}" type: "{kind}" bottom: "{bottom}" top: "{name}" '
            f"{param} {{ num_output: {n} {extra}"
            'weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0 } } }'
        )
        bottom = name
    lines.append(f'layer {{ name: "prob" type: "Softmax" bottom: "{bottom}" top: "prob" }}')
    return "\n".join(lines) + "\n"


def write_lmdb(path: Path, crops: np.ndarray, labels: list[int]) -> Path:
    """Datum LMDB as the dataset writes it: float_data v = 32767 + 4000 z, 1 x S x S, label."""
    import lmdb
    from caffe.proto import caffe_pb2

    from data_prep.core.normalize import encode_z

    env = lmdb.open(str(path), map_size=1 << 28)
    with env.begin(write=True) as txn:
        for i, (z, label) in enumerate(zip(crops, labels, strict=True)):
            d = caffe_pb2.Datum(channels=1, height=z.shape[0], width=z.shape[1], label=int(label))
            d.float_data.extend(encode_z(z).ravel().tolist())
            txn.put(f"{i:08d}".encode(), d.SerializeToString())
    env.close()
    return path
