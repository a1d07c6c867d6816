"""Sliding-window P(sick) heat maps over every frame of time-lapses (paper Figure 4).

Inputs are an experiment (--experiment, every position of its manifest) or loose TIFF
stacks / images / folders. For each time-lapse, writes an ImageJ/Fiji TIFF stack of
P(sick) and an RGB TIFF stack of the red = sick overlays, both calibrated (pixel size and
unit, frame interval: from the manifest, or from the input TIFF's tags), the overlays as
PNG, an animated GIF, and the fraction of the area with P(sick) >= 0.5 per frame
(sick_fraction.csv and .png, or --figure-format, for all time-lapses together).
Exact mode (default) normalises every window as in training; dense mode runs the fully
convolutional net once per frame with local normalisation (faster, approximate).
With --scheduler the heat maps are computed on a Dask cluster (docs/scale.md).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

from data_prep.core.errors import UserError
from data_prep.core.manifest import read_manifest
from data_prep.core.outdir import output_dir
from data_prep.core.paper import CROP_STRIDE_PX, FRAME_INTERVAL_MIN
from data_prep.core.progress import add_progress_argument
from data_prep.core.runinfo import write_settings
from data_prep.core.stack import MANIFEST_CHANNEL, OPTION_CHANNEL, Stack, read_stack
from data_prep.core.tiffout import Calibration
from deadnet_caffe import cluster
from deadnet_caffe.checks import check_image_sources, positive_float, positive_int
from deadnet_caffe.figout import add_figure_argument
from deadnet_caffe.heatmap import (
    DenseNet,
    dense_heatmap,
    exact_heatmap,
    write_heatmaps,
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
        default=None,
        help="minutes between frames of loose inputs (default: the TIFF's ImageJ frame "
        f"interval, else {FRAME_INTERVAL_MIN:g}; experiments use the manifest)",
    )
    add_image_arguments(p)
    add_figure_argument(p)
    add_net_arguments(p)
    add_progress_argument(p)
    cluster.add_cluster_arguments(p)


def _sources(args) -> list[tuple[str, Path, int | None, str | None, str, Calibration]]:
    """(name, path, channel, axes, where the channel is set, calibration) of every
    time-lapse, each read and checked.

    Experiments take pixel size and frame interval from the manifest; loose inputs from their
    own TIFF tags, with ``--frame-interval-min`` overriding (or filling in) the interval.
    """
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
            (
                key.replace("/", "_"),
                p.path,
                p.channel,
                None,
                MANIFEST_CHANNEL,
                Calibration.of_position(p),
            )
            for key, p in ((p.key, p) for p in positions)
        ]
    for path in args.inputs:
        if not path.exists():
            raise UserError(f"{path}: no such file or folder.")
    check_image_sources([(path, args.channel, None) for path in args.inputs], args.axes)
    sources = []
    for path in args.inputs:
        cal = Calibration.of_tiff(path)
        if args.frame_interval_min is not None:
            cal = replace(cal, frame_interval_s=args.frame_interval_min * 60.0)
        cal = cal.or_interval(FRAME_INTERVAL_MIN * 60.0)
        sources.append((path.stem, path, args.channel, args.axes, OPTION_CHANNEL, cal))
    return sources


def _cluster_run(args, sources, inputs) -> tuple[cluster.ClusterRun, list[list[Path]]]:
    """Compute every heat map on the Dask scheduler: the run, each source's chunk files."""
    dense_model = args.dense_model if args.mode == "dense" else None
    spec = cluster.net_spec(args, dense_model=dense_model)
    counts = [
        (
            cluster.Source(path.resolve(), channel, axes, channel_source),
            Stack(path, channel, axes, channel_source).n_frames,
        )
        for _, path, channel, axes, channel_source, _ in sources
    ]
    with cluster.ClusterRun(args, spec, inputs) as run_:
        files = run_.heatmap_chunks(counts, args.mode, args.stride, args.every, args.batch)
    return run_, files


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
        if args.scheduler:
            run_, chunk_files = _cluster_run(args, sources, inputs)
            heat = cluster.ChunkHeat(chunk_files)
        else:
            net = DeployNet(args.model, args.weights, args.gpu)
            if args.mode == "dense":
                dense = DenseNet.from_deploy(args.dense_model, net)
                heat = partial(dense_heatmap, dense=dense)
            else:
                heat = partial(
                    exact_heatmap, predict=net.p_sick, stride=args.stride, batch=args.batch
                )
        timelapses = (
            (name, read_stack(path, channel, axes, channel_source=channel_source), cal)
            for name, path, channel, axes, channel_source, cal in sources
        )
        rows = write_heatmaps(tmp, timelapses, heat, args.every, args.progress, args.figure_format)
        write_settings(tmp, {k: v for k, v in vars(args).items() if not k.startswith("_")})
    if args.scheduler:
        run_.done()
    print(f"wrote {args.out} ({len(sources)} time-lapse(s), {len(rows)} frames)")
    return 0
