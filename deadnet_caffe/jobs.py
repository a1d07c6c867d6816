"""The heat-map and report commands end to end, on this machine or on a Dask cluster.

:func:`write_heatmap_run` is what ``deadnet heatmap`` runs and :func:`write_report_run` what
``deadnet report`` runs: settings in (the command's options, by name), a folder of
artefacts out. They live apart from :mod:`deadnet_caffe.heatmap` and
:mod:`deadnet_caffe.report` because the Dask path (:mod:`deadnet_caffe.cluster`) imports
those two on its workers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

from data_prep.core.checks import read_text
from data_prep.core.errors import UserError
from data_prep.core.manifest import read_manifest
from data_prep.core.outdir import output_dir
from data_prep.core.paper import CROP_STRIDE_PX, FRAME_INTERVAL_MIN, GRADCAM_LAYER
from data_prep.core.runinfo import write_settings
from data_prep.core.stack import MANIFEST_CHANNEL, OPTION_CHANNEL, Stack, read_stack
from data_prep.core.tiffout import Calibration
from deadnet_caffe import cluster, plate
from deadnet_caffe.checks import check_image_sources
from deadnet_caffe.gradcam import GradCam
from deadnet_caffe.heatmap import DenseNet, dense_heatmap, exact_heatmap, write_heatmaps
from deadnet_caffe.infer import DEFAULT_BATCH, DEFAULT_MODEL, DeployNet
from deadnet_caffe.netspec import published
from deadnet_caffe.report import analyse_position, write_report

DEFAULT_DENSE_MODEL = published("deploy_fcn.prototxt")


@dataclass(frozen=True, kw_only=True)
class _Net:
    """The options every inference command shares (infer.add_net_arguments) and the Dask
    cluster's (cluster.add_cluster_arguments); no scheduler: this machine."""

    model: Path = DEFAULT_MODEL
    gpu: int | None = None
    batch: int = DEFAULT_BATCH
    scheduler: str | None = None
    scheduler_timeout: float = cluster.DEFAULT_TIMEOUT_S
    chunk_frames: int = cluster.DEFAULT_CHUNK_FRAMES
    work: Path | None = None


@dataclass(frozen=True)
class HeatmapRun(_Net):
    """What ``deadnet heatmap`` maps: loose ``inputs`` or an ``experiment``; settings.json."""

    weights: Path
    out: Path
    inputs: tuple[Path, ...] = field(default_factory=tuple)
    experiment: Path | None = None
    mode: str = "exact"  # or "dense": one fully convolutional pass per frame
    stride: int = CROP_STRIDE_PX
    dense_model: Path = DEFAULT_DENSE_MODEL
    every: int = 1
    frame_interval_min: float | None = None  # loose inputs: overrides their TIFF's interval
    channel: int | None = None
    axes: str | None = None
    figure_format: tuple[str, ...] = ("png",)


def _sources(s: HeatmapRun) -> list[tuple[str, Path, int | None, str | None, str, Calibration]]:
    """(name, path, channel, axes, where the channel is set, calibration) of every
    time-lapse, each read and checked.

    Experiments take pixel size and frame interval from the manifest; loose inputs from their
    own TIFF tags, with ``--frame-interval-min`` overriding (or filling in) the interval.
    """
    if bool(s.inputs) == bool(s.experiment):
        raise UserError("give either input files or --experiment, not both or neither.")
    if s.experiment:
        positions = read_manifest(s.experiment)
        if s.channel is not None or s.axes is not None:
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
    for path in s.inputs:
        if not path.exists():
            raise UserError(f"{path}: no such file or folder.")
    check_image_sources([(path, s.channel, None) for path in s.inputs], s.axes)
    sources = []
    for path in s.inputs:
        cal = Calibration.of_tiff(path)
        if s.frame_interval_min is not None:
            cal = replace(cal, frame_interval_s=s.frame_interval_min * 60.0)
        cal = cal.or_interval(FRAME_INTERVAL_MIN * 60.0)
        sources.append((path.stem, path, s.channel, s.axes, OPTION_CHANNEL, cal))
    return sources


def _cluster_run(s: HeatmapRun, sources, inputs) -> tuple[cluster.ClusterRun, list[list[Path]]]:
    """Compute every heat map on the Dask scheduler: the run, each source's chunk files."""
    dense_model = s.dense_model if s.mode == "dense" else None
    spec = cluster.net_spec(s, dense_model=dense_model)
    counts = [
        (
            cluster.Source(path.resolve(), channel, axes, channel_source),
            Stack(path, channel, axes, channel_source).n_frames,
        )
        for _, path, channel, axes, channel_source, _ in sources
    ]
    with cluster.ClusterRun(s, spec, inputs) as run_:
        files = run_.heatmap_chunks(counts, s.mode, s.stride, s.every, s.batch)
    return run_, files


def write_heatmap_run(s: HeatmapRun, progress: bool | None = None) -> dict:
    """Write ``s.out``: heat maps of every time-lapse (:func:`heatmap.write_heatmaps`) and
    settings.json. Returns ``timelapses`` and ``frames`` (counts) and, on a cluster,
    ``reused`` (see :func:`write_report_run`)."""
    if s.stride < 1 or s.every < 1:
        raise UserError("--stride and --every must be at least 1.")
    sources = _sources(s)
    inputs = [*s.inputs, s.model, s.weights]
    if s.experiment:
        inputs.append(s.experiment)
    if s.mode == "dense":
        inputs.append(s.dense_model)
    with output_dir(s.out, "heatmap", inputs) as tmp:
        if s.scheduler:
            run_, chunk_files = _cluster_run(s, sources, inputs)
            heat = cluster.ChunkHeat(chunk_files)
        else:
            net = DeployNet(s.model, s.weights, s.gpu)
            if s.mode == "dense":
                dense = DenseNet.from_deploy(s.dense_model, net)
                heat = partial(dense_heatmap, dense=dense)
            else:
                heat = partial(exact_heatmap, predict=net.p_sick, stride=s.stride, batch=s.batch)
        timelapses = (
            (name, read_stack(path, channel, axes, channel_source=channel_source), cal)
            for name, path, channel, axes, channel_source, cal in sources
        )
        rows = write_heatmaps(tmp, timelapses, heat, s.every, progress, s.figure_format)
        write_settings(tmp, asdict(s))
    if s.scheduler:
        run_.done()
    done = {"timelapses": len(sources), "frames": len(rows)}
    if s.scheduler:
        done.update(reused=run_.reused, work=str(run_.work.root))
    return done


@dataclass(frozen=True)
class ReportRun(_Net):
    """What ``deadnet report`` analyses: one ``experiment`` or several (``experiment``
    repeated, ``experiments`` a list file); saved in settings.json."""

    weights: Path
    out: Path
    experiment: tuple[Path, ...] = field(default_factory=tuple)
    experiments: Path | None = None
    stride: int = CROP_STRIDE_PX
    every: int = 1
    late_frames: int = 3
    margin: float = 0.2  # sick fraction above the dose-0 baseline that flags a position
    max_dose: float | None = None
    gradcam_crops: int = 4
    keep_maps: bool = True
    figure_format: tuple[str, ...] = ("png",)


def _experiments(s: ReportRun) -> list[Path]:
    """The experiment folders of ``--experiment`` and ``--experiments``, in that order."""
    exps = list(s.experiment)
    if s.experiments is not None:
        if not s.experiments.is_file():
            raise UserError(f"--experiments {s.experiments}: no such file.")
        lines = read_text(s.experiments, "experiment list").splitlines()
        names = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        if not names:
            raise UserError(f"--experiments {s.experiments}: the list names no experiment.")
        exps += [s.experiments.parent / n for n in names]
    if not exps:
        raise UserError("give --experiment (one or more) or --experiments LIST.")
    if len({e.resolve() for e in exps}) < len(exps):
        raise UserError("an experiment is given twice (--experiment / --experiments).")
    return exps


def _maps_folders(tmp: Path, experiments: list[Path], groups: list[list]) -> list[Path]:
    """The folder that keeps each position's heat maps: OUT/maps, or OUT/NAME/maps per
    experiment of a screen (keys repeat between experiments)."""
    if len(experiments) == 1:
        return [tmp / "maps"] * len(groups[0])
    names = plate.experiment_names(experiments)
    return [tmp / name / "maps" for name, g in zip(names, groups, strict=True) for _ in g]


def write_report_run(s: ReportRun, progress: bool | None = None) -> dict:
    """Write ``s.out``: one experiment's report (:func:`report.write_report`, summary.json)
    or, for several, a report per experiment and the plate summary
    (:func:`plate.write_screen`), and settings.json.

    Returns ``summary`` (the report's or the screen's), ``experiments`` (how many),
    ``positions`` and, on a cluster, ``reused`` (positions whose result a rerun found in
    the work folder) and ``work`` (that folder).
    """
    if min(s.stride, s.every, s.late_frames) < 1 or s.gradcam_crops < 0:
        raise UserError("--stride, --every and --late-frames must be >= 1, --gradcam-crops >= 0.")
    experiments = _experiments(s)
    groups = []
    for exp in experiments:
        positions = read_manifest(exp)
        if s.max_dose is not None:
            positions = [p for p in positions if p.dose_s <= s.max_dose]
            if not positions:
                raise UserError(f"--max-dose {s.max_dose:g}: no position of {exp}.")
        groups.append(positions)
    positions = [p for g in groups for p in g]
    check_image_sources(
        [(p.path, p.channel, p.n_frames) for p in positions], channel_source=MANIFEST_CHANNEL
    )
    inputs = [*experiments, s.model, s.weights]
    if s.experiments is not None:
        inputs.append(s.experiments)
    with output_dir(s.out, "report", inputs) as tmp:
        maps = _maps_folders(tmp, experiments, groups) if s.keep_maps else None
        if s.scheduler:
            spec = cluster.net_spec(s, force_backward=True)
            with cluster.ClusterRun(s, spec, inputs) as run_:
                results = run_.report_results(
                    positions, s.stride, s.every, s.batch, s.gradcam_crops, progress, maps
                )
        else:
            net = DeployNet(s.model, s.weights, s.gpu, force_backward=True)
            gc = GradCam(net, GRADCAM_LAYER)
            results = [
                analyse_position(
                    p,
                    net,
                    gc,
                    s.stride,
                    s.every,
                    s.batch,
                    s.gradcam_crops,
                    progress,
                    maps[i] if maps else None,
                )
                for i, p in enumerate(positions)
            ]
        if len(experiments) == 1:
            summary = write_report(
                tmp, experiments[0], results, s.margin, s.late_frames, s.figure_format
            )
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        else:
            summary = plate.write_screen(
                tmp, experiments, groups, results, s.margin, s.late_frames, s.figure_format
            )
        write_settings(tmp, asdict(s))
    done = {"summary": summary, "experiments": len(experiments), "positions": len(positions)}
    if s.scheduler:
        run_.done()
        done.update(reused=run_.reused, work=str(run_.work.root))
    return done
