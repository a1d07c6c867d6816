"""DeadNet-Caffe: the pycaffe side of the DeadNet reproduction (training, inference, figures).

The public API for scripts and notebooks, imported on first use (so ``import
deadnet_caffe`` loads neither Caffe nor OpenCV)::

    from pathlib import Path
    import deadnet_caffe as dn

    positions = dn.simulate_experiment(dn.SimSettings(), Path("exp"))  # a simulated plate
    card = dn.build(dn.BuildConfig(dataset="A", experiment=Path("exp"), out=Path("ds")))
    result = dn.train(dn.TrainSettings(dataset="ds", solver=..., run="run"))
    doc = dn.evaluate(dn.EvalSettings(weights="run/latest.caffemodel", dataset="ds", out="ev"))
    net = dn.DeployNet(dn.published("deploy.prototxt"), "run/latest.caffemodel")
    frames = dn.read_stack("movie.tif")                             # (T, H, W)
    prob = dn.exact_heatmap(frames[0], net.p_sick)                  # (H, W) P(sick)
    cams = dn.GradCam(dn.DeployNet(..., force_backward=True)).compute(z, labels)

Every name below says where it lives; each module's docstring has the details.
"""

from __future__ import annotations

import importlib

from data_prep.core.runinfo import toolkit_version

__version__ = toolkit_version()

#: public name -> (module, attribute)
_API = {
    # data: reading, simulating, building
    "UserError": ("data_prep.core.errors", "UserError"),
    "read_manifest": ("data_prep.core.manifest", "read_manifest"),
    "read_stack": ("data_prep.core.stack", "read_stack"),
    "Stack": ("data_prep.core.stack", "Stack"),
    "SimSettings": ("data_prep.sim.params", "Settings"),
    "simulate_experiment": ("data_prep.sim.plate", "simulate_experiment"),
    "BuildConfig": ("data_prep.build", "BuildConfig"),
    "build": ("data_prep.build", "build"),
    # nets: training, evaluation, inference
    "published": ("deadnet_caffe.netspec", "published"),
    "TrainSettings": ("deadnet_caffe.train", "TrainSettings"),
    "train": ("deadnet_caffe.train", "train"),
    "EvalSettings": ("deadnet_caffe.evaluate", "EvalSettings"),
    "evaluate": ("deadnet_caffe.evaluate", "evaluate"),
    "DeployNet": ("deadnet_caffe.infer", "DeployNet"),
    "classify_stack": ("deadnet_caffe.infer", "classify_stack"),
    # explanation
    "exact_heatmap": ("deadnet_caffe.heatmap", "exact_heatmap"),
    "dense_heatmap": ("deadnet_caffe.heatmap", "dense_heatmap"),
    "DenseNet": ("deadnet_caffe.heatmap", "DenseNet"),
    "GradCam": ("deadnet_caffe.gradcam", "GradCam"),
    "ClassModelSettings": ("deadnet_caffe.classmodel", "ClassModelSettings"),
    "ScoreGradient": ("deadnet_caffe.classmodel", "ScoreGradient"),
    "class_model": ("deadnet_caffe.classmodel", "class_model"),
    "analyse_position": ("deadnet_caffe.report", "analyse_position"),
    "write_report": ("deadnet_caffe.report", "write_report"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    try:
        module, attr = _API[name]
    except KeyError:
        raise AttributeError(f"module 'deadnet_caffe' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
