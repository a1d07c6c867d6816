"""Run Caffe's solver on a data set, with everything it used written into one run folder.

Paper section 2.4 trains the published nets with Caffe; this runner keeps that path (the
``caffe train`` binary and its own glog log) and adds what a long CPU or GPU run needs:

- a *derived* solver and the exact nets in ``RUN/``: Data-layer sources resolved to
  ``DATASET/train.lmdb`` / ``DATASET/test.lmdb``, ``solver_mode`` CPU unless a GPU is asked
  for, snapshots under ``RUN/``, and the command-line overrides; the published files stay
  untouched;
- ``RUN/caffe.log`` (Caffe's log, appended by every session), ``RUN/settings.json``,
  caffemodel + solverstate snapshots and ``RUN/latest.caffemodel`` (a symlink to the newest
  weights), ``RUN/curves.csv`` and the Figure 3a,b PNGs;
- a progress bar (iteration, loss, learning rate, ETA) read live from the log;
- SIGINT / SIGTERM: Caffe is asked to stop (its ``-sigint_effect stop``), which makes it
  write a snapshot at the current iteration (``snapshot_after_train``) and exit cleanly;
  ``resume=True`` continues from the newest solverstate. Caffe 1.0's tool has no
  ``-sigterm_effect`` flag, so a SIGTERM to this process is passed on to Caffe as SIGINT.
  Caffe runs in its own session, so a terminal's Ctrl-C reaches it only through us, and it
  dies with this process (``PR_SET_PDEATHSIG``), so a SIGKILL leaves no orphan training;
- a run folder that holds no complete snapshot (stopped or killed before the first) is
  started afresh by the next session; snapshots left incomplete by a kill are removed and
  the newest whole one is resumed. The run folder follows :mod:`data_prep.core.outdir`.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import DecodeError

from data_prep.core import outdir, paper, runinfo
from data_prep.core.datum import check_lmdb
from data_prep.core.errors import UserError
from data_prep.core.progress import progress_bar
from deadnet_caffe import caffe_env, curves, logparse, netspec
from deadnet_caffe.checks import check_net_param

SOLVER_NAME = "solver.prototxt"
LATEST_NAME = "latest.caffemodel"
SETTINGS_NAME = "settings.json"
SPLITS = ("train.lmdb", "test.lmdb")
_PHASE_SOURCE = {0: "train.lmdb", 1: "test.lmdb"}  # caffe_pb2.TRAIN, caffe_pb2.TEST
_LOSS_VALUE = re.compile(r"(?:, loss = |output #\d+: \S*loss\S* = )([-+]?(?:nan|inf)\w*)", re.I)
_SNAPSHOT_RE = re.compile(r"_iter_(\d+)\.(caffemodel|solverstate)$")
#: Caffe logs at most this many display lines per run when --max-iter shortens it.
DISPLAY_LINES = 100


@dataclass
class TrainSettings:
    """What ``deadnet train`` was asked to do (saved as ``RUN/settings.json``).

    ``None`` for an override means "as in the solver file". ``base_lr`` other than the
    published 0.0003 (paper section 2.4) makes the run a stated derivative.
    """

    dataset: str | None
    solver: str | None
    run: str
    max_iter: int | None = None
    snapshot_interval: int | None = None
    test_interval: int | None = None
    test_iter: int | None = None
    base_lr: float | None = None
    seed: int | None = None
    gpu: str | None = None
    resume: bool = False
    weights: str | None = None  # fine-tune: Caffe's -weights (layers matched by name)
    paper_iterations: bool = False  # max_iter = the paper's ~500k (section 2.4)


@dataclass
class TrainResult:
    """What a training session ended with."""

    run: Path
    iteration: int | None  # the newest snapshot's iteration
    max_iter: int
    interrupted: str | None  # "SIGINT" / "SIGTERM" if stopped by a signal
    latest: Path | None  # RUN/latest.caffemodel


def caffe_binary() -> Path:
    """The ``caffe`` tool beside this Python (``.venv/bin/caffe``), else the one on PATH."""
    here = Path(sys.executable).parent / "caffe"
    if here.exists():
        return here
    found = shutil.which("caffe")
    if not found:
        raise UserError(f"no caffe binary in {here.parent} or on PATH; run 'make setup' first.")
    return Path(found)


def snapshots(run: Path, kind: str = "solverstate") -> list[tuple[int, Path]]:
    """(iteration, path) of the snapshots of ``kind`` in ``run``, oldest first."""
    found = []
    for p in run.glob(f"*_iter_*.{kind}"):
        m = _SNAPSHOT_RE.search(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def _non_finite_loss(line: str) -> str | None:
    """``"nan"``/``"inf"`` when a Caffe log line reports a training or test loss that is not
    finite, else None. Caffe goes on training with NaN weights, and its Accuracy layer then
    reports 1.0 (the argmax of NaN scores is class 0), so the run is stopped instead."""
    m = _LOSS_VALUE.search(line)
    if m and not math.isfinite(float(m.group(1))):
        return m.group(1)
    return None


def _diverged(run: Path, fresh: bool, value: str, iteration: int) -> str:
    """Clean up after a loss became ``value`` (NaN or infinite) at ``iteration``; the message.

    Snapshots from that iteration on hold NaN weights and are deleted; a fresh run left with
    no snapshot is removed, so that the same command can simply be run again.
    """
    for kind in ("caffemodel", "solverstate"):
        for it, path in snapshots(run, kind):
            if it >= iteration:
                path.unlink()
    if fresh and not snapshots(run):
        shutil.rmtree(run, ignore_errors=True)
        where = "the run folder was removed"
    else:
        where = f"snapshots before it are kept in {run}"
    return (
        f"training diverged: the loss became {value} at iteration {iteration} "
        f"(lower --base-lr); {where}."
    )


def check_dataset(dataset: Path) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Check ``dataset`` holds non-empty train/test LMDBs of Caffe Datums.

    Returns
    -------
    dict
        Split name -> (number of records, (channels, height, width) of the first Datum).
    """
    out = {}
    for name in SPLITS:
        path = dataset / name
        if not (path / "data.mdb").is_file():
            raise UserError(
                f"{path} is not an LMDB; --dataset must be a folder made by deadnet dataset."
            )
        out[name] = check_lmdb(path)
    return out


def resolve_net(net, dataset: Path, shapes: dict, where: Path, default_phase: int | None):
    """Point every Data layer of ``net`` (a NetParameter, changed in place) at ``dataset``.

    A source named ``train.lmdb`` or ``test.lmdb`` keeps its split; any other source gets the
    split of the layer's phase (TRAIN -> train.lmdb, TEST -> test.lmdb). The stored crops
    must be at least ``crop_size`` on each side (Caffe would abort otherwise).
    """
    for layer in net.layer:
        if layer.type != "Data":
            continue
        phases = [r.phase for r in layer.include if r.HasField("phase")]
        phase = phases[0] if phases else default_phase
        name = Path(layer.data_param.source).name
        if name not in SPLITS:
            if phase is None:
                raise UserError(
                    f"{where}: Data layer '{layer.name}' has neither a phase nor a "
                    "source named train.lmdb / test.lmdb."
                )
            name = _PHASE_SOURCE[phase]
        layer.data_param.source = str((dataset / name).resolve())
        layer.data_param.backend = layer.data_param.LMDB
        crop = layer.transform_param.crop_size
        side = min(shapes[name][1][1:])
        if crop and side < crop:
            raise UserError(
                f"{dataset / name} holds {side} px crops, smaller than the "
                f"crop_size {crop} of layer '{layer.name}' in {where}."
            )
    return net


def solver_net_file(solver_path: Path, name: str) -> Path:
    """The net file a solver names: beside the solver, else in the current folder."""
    for base in (solver_path.parent, Path.cwd()):
        if (base / name).is_file():
            return base / name
    raise UserError(
        f"{solver_path} names net '{name}', which is not found beside it or in the current folder."
    )


def derive(settings: TrainSettings, shapes: dict) -> tuple[object, dict[str, object], dict]:
    """Build the run's solver and nets from the published files and the overrides.

    Returns
    -------
    solver : caffe_pb2.SolverParameter
        With net file names relative to the run folder.
    nets : dict of file name -> caffe_pb2.NetParameter
    derived : dict
        Every field changed from the solver file, old and new value (for settings.json).
    """
    caffe_pb2 = caffe_env.import_caffe().proto.caffe_pb2
    solver_path = Path(settings.solver)
    dataset = Path(settings.dataset)
    solver = netspec.load_solver_param(solver_path)
    nets = {}
    if solver.HasField("net"):
        nets["train_val.prototxt"] = (solver_net_file(solver_path, solver.net), None)
        solver.net = "train_val.prototxt"
    elif solver.HasField("net_param"):
        nets["train_val.prototxt"] = (solver.net_param, None)
        solver.ClearField("net_param")
        solver.net = "train_val.prototxt"
    else:
        if not solver.HasField("train_net"):
            raise UserError(f"{solver_path} names no net (net, net_param or train_net).")
        nets["train_net.prototxt"] = (solver_net_file(solver_path, solver.train_net), 0)
        solver.train_net = "train_net.prototxt"
        for i, name in enumerate(list(solver.test_net)):
            nets[f"test_net_{i}.prototxt"] = (solver_net_file(solver_path, name), 1)
            solver.test_net[i] = f"test_net_{i}.prototxt"
    out_nets = {}
    for fname, (src, phase) in nets.items():
        if isinstance(src, Path):
            net = netspec.load_net_param(src)
        else:
            net = src
            check_net_param(net, solver_path)
        out_nets[fname] = resolve_net(net, dataset, shapes, src, phase)

    derived = {}

    def put(field: str, value) -> None:
        old = getattr(solver, field) if solver.HasField(field) else None
        if old != value:
            derived[field] = {"solver_file": old, "run": value}
            setattr(solver, field, value)

    if settings.max_iter is not None:
        put("max_iter", settings.max_iter)
    if settings.snapshot_interval is not None:
        put("snapshot", settings.snapshot_interval)
    if settings.test_interval is not None:
        put("test_interval", settings.test_interval)
    elif solver.test_interval > solver.max_iter:
        put("test_interval", solver.max_iter)  # a short run is still tested at its end
    if settings.test_iter is not None and list(solver.test_iter) != [settings.test_iter]:
        derived["test_iter"] = {"solver_file": list(solver.test_iter), "run": settings.test_iter}
        solver.test_iter[:] = [settings.test_iter] * len(solver.test_iter)
    if settings.base_lr is not None:
        put("base_lr", settings.base_lr)
    if settings.seed is not None:
        put("random_seed", settings.seed)
    # Logging only: enough loss lines for the progress bar and curves of a short run.
    display = min(solver.display or DISPLAY_LINES, max(1, solver.max_iter // DISPLAY_LINES))
    put("display", display)
    put("snapshot_prefix", Path(solver.snapshot_prefix or "snapshot").name)
    mode = caffe_pb2.SolverParameter.GPU if settings.gpu else caffe_pb2.SolverParameter.CPU
    if solver.solver_mode != mode:
        derived["solver_mode"] = {
            "solver_file": caffe_pb2.SolverParameter.SolverMode.Name(solver.solver_mode),
            "run": caffe_pb2.SolverParameter.SolverMode.Name(mode),
        }
        solver.solver_mode = mode
    return solver, out_nets, derived


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _previous_settings(run: Path, required: bool = True) -> dict:
    """The settings of the run's first session; ``{}`` if absent and not ``required``."""
    import json

    path = run / SETTINGS_NAME
    try:
        doc = json.loads(path.read_text())["settings"]
        if not isinstance(doc, dict):
            raise TypeError
        return doc
    except (OSError, ValueError, KeyError, TypeError):
        if not required:
            return {}
        raise UserError(f"{path} is missing or unreadable; pass --dataset and --solver.") from None


def _learnable_blobs(model: Path) -> int | None:
    """Number of learnable blobs in a .caffemodel, None if it is not a whole NetParameter."""
    caffe_pb2 = caffe_env.import_caffe().proto.caffe_pb2
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(model.read_bytes())
    except (OSError, DecodeError):
        return None
    return sum(len(layer.blobs) for layer in net.layer) or None


def _state_complete(run: Path, it: int, path: Path) -> bool:
    """Whether the solverstate ``path`` of iteration ``it`` and its caffemodel are whole.

    Caffe writes the caffemodel, then the solverstate, in place: a run killed while writing
    leaves a truncated file, which would make Caffe abort on --resume.
    """
    caffe_pb2 = caffe_env.import_caffe().proto.caffe_pb2
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(path.read_bytes())
    except (OSError, DecodeError):
        return False
    model = run / Path(state.learned_net).name
    n = _learnable_blobs(model) if state.learned_net else None
    # SGD, Nesterov, AdaGrad, RMSProp keep one history blob per learnable blob; AdaDelta, Adam two
    return state.iter == it and n is not None and len(state.history) in (n, 2 * n)


def usable_snapshots(run: Path) -> list[tuple[int, Path]]:
    """(iteration, solverstate) of ``run`` up to its newest complete snapshot, oldest first.

    Snapshots newer than that (left truncated by a kill while Caffe was writing them) are
    removed, both files, so that Caffe can write them again.
    """
    states = snapshots(run) if run.is_dir() else []
    while states and not _state_complete(run, *states[-1]):
        states.pop()
    newest = states[-1][0] if states else -1
    for kind in ("solverstate", "caffemodel"):
        for it, p in snapshots(run, kind) if run.is_dir() else []:
            if it > newest:
                p.unlink()
                print(f"deadnet train: removed {p.name}, left incomplete by a killed run.")
    return states


def prepare(settings: TrainSettings) -> tuple[Path, Path | None, int]:
    """Validate the inputs and write the run folder's solver, nets and settings.

    A run folder that carries the marker of ``deadnet train`` but holds no complete
    snapshot (a session stopped before its first) is started afresh, with or without
    ``resume``; one with snapshots needs ``resume``. A run folder of an earlier version (no
    marker) can still be resumed.

    Returns
    -------
    run : Path
    state : Path or None
        The solverstate to resume from.
    max_iter : int
    """
    run = Path(settings.run)
    legacy = (
        run.is_dir()
        and outdir.read_marker(run) is None
        and bool(snapshots(run))
        and (run / SETTINGS_NAME).is_file()
    )
    if not legacy:
        outdir.check_location(run, "train", _inputs(settings), "--run")
    states = usable_snapshots(run)
    state = None
    if settings.paper_iterations:
        if settings.max_iter not in (None, paper.MAX_ITER_PAPER):
            raise UserError(
                f"--paper-iterations sets max_iter to {paper.MAX_ITER_PAPER}; "
                f"drop --max-iter {settings.max_iter} or --paper-iterations."
            )
        settings.max_iter = paper.MAX_ITER_PAPER
    if settings.weights is not None:
        if settings.resume:
            raise UserError(
                "--weights starts a new run from a caffemodel and --resume continues one "
                "from its solverstate; pass only one."
            )
        weights = Path(settings.weights)
        if not weights.is_file():
            raise UserError(f"--weights: {weights} is not a file.")
        settings.weights = str(weights.resolve())
    ours = outdir.read_marker(run) is not None or legacy
    if states:
        if not settings.resume:
            raise UserError(
                f"{run} already holds snapshots up to iteration {states[-1][0]}; pass --resume "
                "to continue it or choose another --run."
            )
        state = states[-1][1]
    elif settings.resume and not ours:
        raise UserError(f"{run} holds no solverstate to resume from.")
    if ours:
        prev = _previous_settings(run, required=state is not None)
        settings.dataset = settings.dataset or prev.get("dataset")
        settings.solver = settings.solver or prev.get("solver")
        for field in (
            "max_iter",
            "snapshot_interval",
            "test_interval",
            "test_iter",
            "base_lr",
            "seed",
        ):
            if getattr(settings, field) is None:
                setattr(settings, field, prev.get(field))
    if state is None and ours:
        print(
            f"deadnet train: {run} holds no complete snapshot (an earlier session stopped "
            "before its first), so this run starts afresh.",
            file=sys.stderr,
        )
    if not settings.dataset or not settings.solver:
        raise UserError("--dataset and --solver are needed unless --resume continues a run.")
    # absolute, so that --resume works from any folder
    settings.dataset = str(Path(settings.dataset).resolve())
    settings.solver = str(Path(settings.solver).resolve())
    if not legacy:
        outdir.check_location(run, "train", _inputs(settings), "--run")
    if settings.gpu is not None:
        caffe_env.check_gpu(settings.gpu)
    shapes = check_dataset(Path(settings.dataset))
    solver, nets, derived = derive(settings, shapes)
    doc = {
        **asdict(settings),
        "derived_from_solver_file": derived,
        "records": {k: v[0] for k, v in shapes.items()},
        "record_shape": shapes[SPLITS[0]][1],
    }
    if settings.base_lr is not None:
        doc["derivative"] = "base_lr differs from the published solver (paper section 2.4)"

    def write(folder: Path) -> None:
        for fname, net in nets.items():
            _write_text(folder / fname, text_format.MessageToString(net))
        _write_text(folder / SOLVER_NAME, text_format.MessageToString(solver))

    if state is None:
        with outdir.output_dir(run, "train", _inputs(settings), "--run", listed=False) as tmp:
            write(tmp)
            runinfo.write_settings(tmp, doc, SETTINGS_NAME)
    else:
        write(run)
        runinfo.write_settings(run, doc, f"settings.resume-{states[-1][0]}.json")
    return run, state, solver.max_iter


def _inputs(settings: TrainSettings) -> list[str]:
    """The inputs that --run must not be, contain or lie inside."""
    return [p for p in (settings.dataset, settings.solver, settings.weights) if p]


def update_latest(run: Path) -> Path | None:
    """Point ``RUN/latest.caffemodel`` (a relative symlink) at the newest caffemodel."""
    models = snapshots(run, "caffemodel")
    if not models:
        return None
    link = run / LATEST_NAME
    tmp = run / f".{LATEST_NAME}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(models[-1][1].name)
    tmp.replace(link)
    return link


def train(settings: TrainSettings, progress: bool | None = None) -> TrainResult:
    """Run (or resume) a training session; see the module docstring for what it writes.

    Raises
    ------
    UserError
        Bad inputs (nothing is written), or Caffe failed (its fatal line is quoted).
    """
    run, state, max_iter = prepare(settings)
    cmd = [str(caffe_binary()), "train", f"-solver={SOLVER_NAME}", "-sigint_effect=stop"]
    if state is not None:
        cmd.append(f"-snapshot={state.name}")
    elif settings.weights is not None:
        cmd.append(f"-weights={settings.weights}")
    if settings.gpu is not None:
        cmd.append(f"-gpu={settings.gpu}")
    env = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0")
    start = snapshots(run)[-1][0] if state is not None else 0
    parser = logparse.LineParser()
    stopped: list[str] = []
    diverged: list[tuple[str, int]] = []  # the first non-finite loss and its iteration
    started: list[subprocess.Popen] = []

    def on_signal(signum, _frame):
        stopped.append(signal.Signals(signum).name)
        for proc in started:
            if len(stopped) == 1:
                proc.send_signal(signal.SIGINT)  # -sigint_effect=stop: snapshot, then exit
            else:
                proc.kill()

    # The handler is in place before Caffe starts: a signal that arrives while it starts
    # (during the fork) is remembered and passed on, not lost.
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    # Caffe runs in its own process group so that a terminal's Ctrl-C reaches it only once,
    # through the handler above; it dies with this process (caffe_env.child_limits).
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=run,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=caffe_env.child_limits,
        )
    except BaseException:
        for s, h in old.items():
            signal.signal(s, h)
        raise
    started.append(proc)
    if stopped:
        proc.send_signal(signal.SIGINT if len(stopped) == 1 else signal.SIGKILL)
    tail: list[str] = []
    shown: tuple = (None, None)  # the loss and lr on the progress bar
    try:
        with (
            open(run / curves.LOG_NAME, "a", buffering=1) as log,
            progress_bar(
                total=max_iter,
                initial=start,
                unit="iter",
                progress=progress,
                dynamic_ncols=True,
                file=sys.stderr,
            ) as bar,
        ):
            for line in proc.stdout:
                log.write(line)
                parser.feed(line)
                if not diverged and (bad := _non_finite_loss(line)):
                    diverged.append((bad, parser.log.last_iteration or start))
                    proc.kill()  # the weights are NaN from here on; nothing more to learn
                if line[:1] in "EF":
                    tail.append(line.strip())
                it = parser.log.last_iteration
                if it is not None and it > bar.n:
                    bar.update(it - bar.n)
                if (parser.last_loss, parser.last_lr) != shown:
                    shown = (parser.last_loss, parser.last_lr)
                    bar.set_postfix(loss=shown[0], lr=shown[1], refresh=False)
            code = proc.wait()
            if code == 0 and not stopped:
                bar.update(max_iter - bar.n)  # Caffe logs the last iteration only on display
        if diverged:
            raise UserError(_diverged(run, state is None, *diverged[0]))
        done = usable_snapshots(run)
        if code != 0 and not stopped:
            if state is None and not done:
                shutil.rmtree(run, ignore_errors=True)
                where = "the run folder was removed"
            else:
                where = f"see {run / curves.LOG_NAME}"
            why = tail[-1] if tail else f"exit status {code}"
            raise UserError(f"caffe train stopped in {run} ({why}); {where}.")
        # the wrap-up runs under the handler too: a second Ctrl-C that lands after Caffe has
        # exited (a small net stops within the 50 ms between two presses) is counted, not
        # raised in the middle of writing latest.caffemodel or the curves
        latest = update_latest(run)
        curves.update_run(run)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return TrainResult(
        run, done[-1][0] if done else None, max_iter, stopped[0] if stopped else None, latest
    )
