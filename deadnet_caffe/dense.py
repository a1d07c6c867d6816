"""How far dense mode may be trusted: dense against exact at the same output grid (issue 18).

Dense mode (:func:`deadnet_caffe.heatmap.dense_heatmap`) answers for the 220 px window at
every multiple of 16 px, normalised by the 256 px square around each pixel; exact mode
normalises every 256 px window on its own as in training. :func:`measure` compares them on
the same windows and against the simulator's ground truth:

- ``window_mean_abs_dp`` and ``window_p95_abs_dp``: |P_dense(sick) - P_exact(sick)| over
  dense output cells whose whole 256 px window lies inside the frame (the exact answer of the
  same 220 px window, its 256 px window normalised as in training);
- ``auroc_exact`` and ``auroc_dense``: heat-map AUROC (P(sick) per cell pixel against the
  sick-cell masks, all positions pooled) of the exact map at ``stride`` (the report's) and
  of the dense map;
- ``speed_dense_over_exact``: seconds per frame of exact mode at ``stride`` over dense mode;
  ``speed_dense_over_exact_same_grid``: the same for exact mode on dense's 16 px grid
  (windows per frame times the measured seconds per window).

The goal the issue sets: mean |dP| <= 0.02, AUROC within 0.01 of exact, >= 10 times faster
(:data:`GOALS`); :func:`holds` checks a measurement against it.
"""

from __future__ import annotations

import time

import numpy as np

from data_prep.core.paper import CROP_PX, CROP_STRIDE_PX, NET_INPUT_PX
from deadnet_caffe.heatmap import DenseNet, dense_heatmap, exact_heatmap, local_normalize
from deadnet_caffe.infer import DEFAULT_BATCH, DeployNet, crop_to_input
from deadnet_caffe.report import pooled_auroc, score_position

#: The issue's bar for dense mode (issue 18, item 3).
GOALS = {"mean_abs_dp": 0.02, "auroc_gap": 0.01, "speedup": 10.0}


def window_pairs(
    frame: np.ndarray,
    net: DeployNet,
    dense: DenseNet,
    n_cells: int,
    rng: np.random.Generator,
    batch: int = DEFAULT_BATCH,
) -> tuple[np.ndarray, np.ndarray, float]:
    """P(sick) of ``n_cells`` random interior dense cells from both modes, and s per window.

    Returns
    -------
    exact (n,), dense (n,) float32, and the exact mode's seconds per window.
    """
    prob, _, _ = dense.probs(local_normalize(frame))
    half = (CROP_PX - NET_INPUT_PX) // 2
    h, w = frame.shape
    s = dense.stride
    cells = [
        (i, j)
        for i in range(prob.shape[0])
        for j in range(prob.shape[1])
        if s * i >= half and s * i - half + CROP_PX <= h
        if s * j >= half and s * j - half + CROP_PX <= w
    ]
    pick = [cells[k] for k in rng.permutation(len(cells))[:n_cells]]
    tops = [(s * i - half, s * j - half) for i, j in pick]
    crops = np.stack([frame[y : y + CROP_PX, x : x + CROP_PX] for y, x in tops])
    t0 = time.perf_counter()
    p_exact = net.probs(crop_to_input(crops), batch)[:, 1]
    per_window = (time.perf_counter() - t0) / len(pick)
    return p_exact, np.array([prob[i, j] for i, j in pick], dtype=np.float32), per_window


def measure(
    positions: list,
    net: DeployNet,
    dense: DenseNet,
    frames_per_position: int = 2,
    cells_per_frame: int = 200,
    stride: int = CROP_STRIDE_PX,
    seed: int = 0,
) -> dict:
    """Dense against exact on ``frames_per_position`` evenly spaced frames of each position.

    Parameters
    ----------
    positions : data_prep.core.manifest.Position list, with ground truth for the AUROCs.
    """
    from data_prep.core.grids import Grid
    from data_prep.core.stack import MANIFEST_CHANNEL, read_stack

    rng = np.random.default_rng(seed)
    dp, t_exact, t_dense, t_window, n_frames = [], 0.0, 0.0, [], 0
    exact_res, dense_res, grid_windows = [], [], []
    for pos in positions:
        frames = read_stack(pos.path, pos.channel, channel_source=MANIFEST_CHANNEL)
        ids = sorted(set(np.linspace(0, len(frames) - 1, frames_per_position).astype(int)))
        maps = {"exact": [], "dense": []}
        for t in ids:
            t0 = time.perf_counter()
            maps["exact"].append(exact_heatmap(frames[t], net.p_sick, stride))
            t1 = time.perf_counter()
            maps["dense"].append(dense_heatmap(frames[t], dense))
            t2 = time.perf_counter()
            t_exact, t_dense, n_frames = t_exact + t1 - t0, t_dense + t2 - t1, n_frames + 1
            pe, pd, per = window_pairs(frames[t], net, dense, cells_per_frame, rng)
            dp.append(np.abs(pd - pe))
            t_window.append(per)
            g = Grid.over(*frames[t].shape, dense.stride)
            grid_windows.append(g.shape[0] * g.shape[1])
        exact_res.append(score_position(pos, frames, ids, np.stack(maps["exact"]), None, 0))
        dense_res.append(score_position(pos, frames, ids, np.stack(maps["dense"]), None, 0))
    dp = np.concatenate(dp)
    same_grid = float(np.mean(grid_windows)) * float(np.mean(t_window))
    a_exact, a_dense = pooled_auroc(exact_res), pooled_auroc(dense_res)
    return {
        "frames": n_frames,
        "windows_compared": int(dp.size),
        "window_mean_abs_dp": float(dp.mean()),
        "window_p95_abs_dp": float(np.percentile(dp, 95)),
        "auroc_exact": a_exact if np.isfinite(a_exact) else None,
        "auroc_dense": a_dense if np.isfinite(a_dense) else None,
        "exact_stride": stride,
        "exact_s_per_frame": t_exact / n_frames,
        "dense_s_per_frame": t_dense / n_frames,
        "speed_dense_over_exact": t_exact / t_dense,
        "speed_dense_over_exact_same_grid": same_grid / (t_dense / n_frames),
    }


def holds(m: dict) -> bool:
    """Whether a :func:`measure` result meets :data:`GOALS`."""
    if m["auroc_exact"] is None or m["auroc_dense"] is None:
        return False
    return (
        m["window_mean_abs_dp"] <= GOALS["mean_abs_dp"]
        and abs(m["auroc_dense"] - m["auroc_exact"]) <= GOALS["auroc_gap"]
        and m["speed_dense_over_exact"] >= GOALS["speedup"]
    )
