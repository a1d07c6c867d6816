"""Sliding-window P(sick) heat maps over every frame of time-lapses (paper Figure 4).

Inputs are an experiment (--experiment, every position of its manifest) or loose TIFF
stacks / images / folders. For each time-lapse, writes an ImageJ/Fiji TIFF stack of
P(sick), red = sick overlays as PNG, an animated GIF, and the fraction of the area with
P(sick) >= 0.5 per frame (sick_fraction.csv and .png for all time-lapses together).
Exact mode (default) normalises every window as in training; dense mode runs the fully
convolutional net once per frame with local normalisation (faster, approximate).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from data_prep.core.errors import UserError
from data_prep.core.manifest import read_manifest
from data_prep.core.outdir import output_dir
from data_prep.core.paper import CROP_STRIDE_PX, FRAME_INTERVAL_MIN
from data_prep.core.progress import add_progress_argument
from data_prep.core.runinfo import write_settings
from data_prep.core.stack import MANIFEST_CHANNEL, OPTION_CHANNEL, read_stack
from deadnet_caffe.checks import check_image_sources, positive_float, positive_int
from deadnet_caffe.heatmap import (
    DenseNet,
    dense_heatmap,
    exact_heatmap,
    heatmap_timelapse,
    plot_fractions,
    write_fraction_table,
)
from deadnet_caffe.infer import DeployNet, add_image_arguments, add_net_arguments
from deadnet_caffe.netspec import published

NAME = "heatmap"
HELP = "sliding-window P(sick) heat maps of time-lapses (PNG, TIFF, GIF, sick fraction)"
DEFAULT_DENSE_MODEL = published("deploy_fcn.prototxt")


def add_arguments(p) -> None:
    src = p.add_argument_group("input (one of)")
    src.add_argument("inputs", nargs="*", type=Path, help="TIFF stacks, images or folders")
    src.add_argument("--experiment", type=Path, help="experiment folder with manifest.csv")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--mode",
        choices=("exact", "dense"),
        default="exact",
        help="exact: every window normalised as in training; dense: one fully convolutional pass",
    )
    p.add_argument(
        "--stride", type=positive_int, default=CROP_STRIDE_PX, help="window step (exact mode)"
    )
    p.add_argument(
        "--dense-model",
        type=Path,
        default=DEFAULT_DENSE_MODEL,
        help="fully convolutional deploy variant (dense mode)",
    )
    p.add_argument("--every", type=positive_int, default=1, help="use every n-th frame")
    p.add_argument(
        "--frame-interval-min",
        type=positive_float,
        default=FRAME_INTERVAL_MIN,
        help="minutes between frames of loose inputs (experiments use the manifest)",
    )
    add_image_arguments(p)
    add_net_arguments(p)
    add_progress_argument(p)


def _sources(args) -> list[tuple[str, Path, int | None, str | None, str, float]]:
    """(name, path, channel, axes, where the channel is set, frame interval) of every
    time-lapse, each read and checked."""
    if bool(args.inputs) == bool(args.experiment):
        raise UserError("give either input files or --experiment, not both or neither.")
    if args.experiment:
        positions = read_manifest(args.experiment)
        if args.channel is not None or args.axes is not None:
            raise UserError(
                "--channel and --axes are for loose inputs; an experiment's "
                "manifest gives each position's channel."
            )
        check_image_sources(
            [(p.path, p.channel, p.n_frames) for p in positions], channel_source=MANIFEST_CHANNEL
        )
        return [
            (key.replace("/", "_"), p.path, p.channel, None, MANIFEST_CHANNEL, p.frame_interval_min)
            for key, p in ((p.key, p) for p in positions)
        ]
    for path in args.inputs:
        if not path.exists():
            raise UserError(f"{path}: no such file or folder.")
    check_image_sources([(path, args.channel, None) for path in args.inputs], args.axes)
    return [
        (path.stem, path, args.channel, args.axes, OPTION_CHANNEL, args.frame_interval_min)
        for path in args.inputs
    ]


def run(args) -> int:
    if args.stride < 1 or args.every < 1:
        raise UserError("--stride and --every must be at least 1.")
    sources = _sources(args)
    inputs = [*args.inputs, args.model, args.weights]
    if args.experiment:
        inputs.append(args.experiment)
    if args.mode == "dense":
        inputs.append(args.dense_model)
    with output_dir(args.out, NAME, inputs) as tmp:
        net = DeployNet(args.model, args.weights, args.gpu)
        if args.mode == "dense":
            dense = DenseNet.from_deploy(args.dense_model, net)
            heat = partial(dense_heatmap, dense=dense)
        else:
            heat = partial(exact_heatmap, predict=net.p_sick, stride=args.stride, batch=args.batch)
        rows = []
        for name, path, channel, axes, channel_source, dt in sources:
            frames = read_stack(path, channel, axes, channel_source=channel_source)[:: args.every]
            ids = [t * args.every for t in range(len(frames))]
            frac, mean = heatmap_timelapse(tmp, name, frames, ids, heat, progress=args.progress)
            for t, f, m in zip(ids, frac, mean, strict=True):
                rows.append(
                    {
                        "position": name,
                        "frame": t,
                        "time_min": t * dt,
                        "sick_fraction": float(f),
                        "mean_p_sick": float(m),
                    }
                )
        write_fraction_table(tmp / "sick_fraction.csv", rows)
        plot_fractions(tmp / "sick_fraction.png", rows)
        write_settings(tmp, {k: v for k, v in vars(args).items() if not k.startswith("_")})
    print(f"wrote {args.out} ({len(sources)} time-lapse(s), {len(rows)} frames)")
    return 0
