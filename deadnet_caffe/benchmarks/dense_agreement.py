"""Dense mode against exact mode on trained weights (issue 18; deadnet_caffe.dense).

Weights: the first that exists of ``snapshots/dataset_A/latest.caffemodel`` and
``runs/demo/train/latest.caffemodel`` (``make demo``); without trained weights the figures
are those of Caffe's fillers and say nothing about trained nets (``weights`` says which).
Experiment: the first position of each well of ``runs/demo/experiment`` (``make demo``),
else a small simulated one (tiny preset, 512 x 512). Reports
:func:`deadnet_caffe.dense.measure` and whether the issue's goals hold (``dense_goals_hold``).
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from deadnet_caffe.benchmarks.inference import FCN_MODEL, MODEL, ROOT, _filler_weights

NAME = "dense"
WEIGHTS = (
    ROOT / "snapshots" / "dataset_A" / "latest.caffemodel",
    ROOT / "runs" / "demo" / "train" / "latest.caffemodel",
)
EXPERIMENT = ROOT / "runs" / "demo" / "experiment"


def run(out_dir: Path, quick: bool) -> dict:
    from data_prep.core.manifest import read_manifest
    from data_prep.sim.params import PRESETS, Settings
    from data_prep.sim.plate import simulate_experiment
    from deadnet_caffe.dense import GOALS, holds, measure
    from deadnet_caffe.heatmap import DenseNet
    from deadnet_caffe.infer import DeployNet

    trained = next((w for w in WEIGHTS if w.is_file()), None)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        weights = trained or _filler_weights(Path(tmp) / "filler.caffemodel")
        net = DeployNet(MODEL, weights)
        dense = DenseNet.from_deploy(FCN_MODEL, net)
        if EXPERIMENT.is_dir() and not quick:
            wells: dict = {}  # the first position of each well
            for p in read_manifest(EXPERIMENT):
                wells.setdefault((p.plate, p.well), p)
            positions = list(wells.values())
            source = f"{EXPERIMENT.relative_to(ROOT)}, first position of each well"
        else:
            lay = replace(PRESETS["tiny"], width=512, height=512, votes=False)
            positions = simulate_experiment(Settings(layout=lay), Path(tmp) / "exp", progress=False)
            source = "simulated tiny preset, 512 x 512"
        res = measure(positions, net, dense, 1 if quick else 2, 50 if quick else 200)
    res = {
        "weights": str(trained.relative_to(ROOT)) if trained else "fillers",
        "experiment": source,
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()},
        "goals": GOALS,
        "dense_goals_hold": holds(res),
    }
    return res
