"""Heat-map speed (paper section 3.1, Figure 4): batched exact mode vs a naive loop, and dense
mode's speed-up and error against exact mode, on one 1344 x 1024 frame in the same run; and
validation on a small simulated experiment (heat-map AUROC against the sick-cell masks,
Grad-CAM energy on sick cells and pointing-game hit rate; deadnet_caffe.validate).

Weights: ``snapshots/dataset_A/latest.caffemodel`` when it exists (trained), otherwise
Caffe's fillers with BatchNorm statistics set to mean 0 / variance 1. With filler weights
P(sick) varies little between windows, so dense mode's error is also given relative to the
spread (standard deviation) of the exact probabilities.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from data_prep.core.paper import FRAME_HEIGHT_PX, FRAME_WIDTH_PX, NET_INPUT_PX
from deadnet_caffe.heatmap import DenseNet, dense_heatmap, exact_heatmap, local_normalize
from deadnet_caffe.infer import DEFAULT_BATCH, DeployNet, crop_to_input
from deadnet_caffe.netspec import published

NAME = "inference"
ROOT = Path(__file__).resolve().parent.parent.parent
MODEL = published("deploy.prototxt")
FCN_MODEL = published("deploy_fcn.prototxt")
TRAINED = ROOT / "snapshots" / "dataset_A" / "latest.caffemodel"


def _filler_weights(path: Path) -> Path:
    import caffe

    caffe.set_random_seed(0)
    net = caffe.Net(str(MODEL), caffe.TEST)
    for layer, blobs in zip(net._layer_names, net.layers, strict=True):
        if blobs.type == "BatchNorm":
            p = net.params[layer]
            p[0].data[...], p[1].data[...], p[2].data[...] = 0.0, 1.0, 1.0
    net.save(str(path))
    return path


def _frame(h: int, w: int) -> np.ndarray:
    """A phase-contrast-like 16-bit test frame: blobs of several sizes on a flat background."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    x = sum(gaussian_filter(rng.normal(size=(h, w)), s) * s for s in (2.0, 6.0, 20.0))
    x = (x - x.min()) / np.ptp(x)
    return (1000 + 3000 * x).astype(np.uint16)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(out_dir: Path, quick: bool) -> dict:
    h, w = (384, 416) if quick else (FRAME_HEIGHT_PX, FRAME_WIDTH_PX)
    strides = (128, 64) if quick else (128, 32)
    frame = _frame(h, w)
    with tempfile.TemporaryDirectory() as tmp:
        weights = TRAINED if TRAINED.is_file() else _filler_weights(Path(tmp) / "filler.caffemodel")
        net = DeployNet(MODEL, weights, force_backward=True)
    res: dict = {"frame": f"{w} x {h}", "weights": "trained" if TRAINED.is_file() else "fillers"}
    warm = crop_to_input(frame[None, :256, :256])
    for b in (DEFAULT_BATCH, 1):  # Caffe allocates its buffers on the first pass of a shape
        net.p_sick(np.repeat(warm, b, axis=0))
    exact = {}
    for s in strides:
        exact[s], t_batch = _timed(lambda s=s: exact_heatmap(frame, net.p_sick, s, DEFAULT_BATCH))
        naive, t_naive = _timed(lambda s=s: exact_heatmap(frame, net.p_sick, s, batch=1))
        res[f"exact_s{s}_batched_s"] = round(t_batch, 2)
        res[f"exact_s{s}_naive_s"] = round(t_naive, 2)
        res[f"exact_s{s}_speedup_vs_naive"] = round(t_naive / t_batch, 2)
        res[f"exact_s{s}_max_abs_diff_vs_naive"] = float(np.abs(naive - exact[s]).max())
    dense = DenseNet.from_deploy(FCN_MODEL, net)
    dmap, t_dense = _timed(lambda: dense_heatmap(frame, dense))
    fine = min(strides)
    res["dense_s"] = round(t_dense, 2)
    res[f"dense_speedup_vs_exact_s{fine}"] = round(res[f"exact_s{fine}_batched_s"] / t_dense, 2)
    diff = np.abs(dmap - exact[fine])
    res[f"dense_vs_exact_s{fine}_pixel_mean_abs_dp"] = float(diff.mean())
    res[f"dense_vs_exact_s{fine}_pixel_max_abs_dp"] = float(diff.max())
    # the same 220 px windows through both modes: dense cell (i, j) is the window at 16 (i, j)
    prob, _, _ = dense.probs(local_normalize(frame))
    half = (256 - NET_INPUT_PX) // 2
    rng = np.random.default_rng(1)
    cells = [
        (i, j)
        for i in range(prob.shape[0])
        for j in range(prob.shape[1])
        if 16 * i >= half
        and 16 * i + 256 - half <= h
        and 16 * j >= half
        and 16 * j + 256 - half <= w
    ]
    pick = [cells[k] for k in rng.permutation(len(cells))[: 12 if quick else 60]]
    crops = np.stack(
        [
            frame[16 * i - half : 16 * i - half + 256, 16 * j - half : 16 * j - half + 256]
            for i, j in pick
        ]
    )
    p_exact = net.probs(crop_to_input(crops))[:, 1]
    p_dense = np.array([prob[i, j] for i, j in pick])
    dp = np.abs(p_dense - p_exact)
    res["dense_vs_exact_windows"] = len(pick)
    res["dense_vs_exact_window_mean_abs_dp"] = float(dp.mean())
    res["dense_vs_exact_window_max_abs_dp"] = float(dp.max())
    res["exact_window_p_std"] = float(p_exact.std())
    res["dense_window_error_relative_to_spread"] = float(dp.mean() / max(p_exact.std(), 1e-12))
    res.update(_validation(net, quick))
    return res


def _validation(net: DeployNet, quick: bool) -> dict:
    """Exact heat maps and Grad-CAM of a small simulated experiment against its ground truth."""
    from dataclasses import replace

    from data_prep.sim.params import PRESETS, Settings
    from data_prep.sim.plate import simulate_experiment
    from deadnet_caffe.gradcam import GradCam
    from deadnet_caffe.report import analyse_position, pooled_auroc

    layout = replace(PRESETS["tiny"], width=512, height=384 if quick else 512, votes=False)
    with tempfile.TemporaryDirectory() as tmp:
        positions = simulate_experiment(Settings(layout=layout), Path(tmp) / "exp", progress=False)
        gc = GradCam(net)
        results = [analyse_position(p, net, gc, 128, 2, DEFAULT_BATCH, 4) for p in positions]
    auc = pooled_auroc(results)
    energy = [e for r in results for e in r.cam_energy]
    hits = [h for r in results for h in r.pointing]
    return {
        "validation_positions": len(results),
        "validation_heatmap_auroc_pooled": auc if np.isfinite(auc) else None,
        "validation_gradcam_crops": len(hits),
        "validation_gradcam_all_zero_maps": sum(r.cam_all_zero for r in results),
        "validation_gradcam_energy_in_sick": float(np.mean(energy)) if energy else None,
        "validation_pointing_game_hit_rate": float(np.mean(hits)) if hits else None,
    }
