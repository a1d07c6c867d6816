"""``deadnet report`` and ``deadnet heatmap`` on a Dask cluster (``--scheduler``; docs/scale.md).

The work is cut into tasks, one per position and chunk of ``--chunk-frames`` analysed frames
(the heat-map values of those frames on their window grid), and, for the report, one per
position (the position's result: sick fraction, ground-truth checks, Grad-CAM), which waits
for its chunks. Every worker loads the net once per thread, on its first task, through a
worker plugin (:class:`NetPlugin`, ``Client.register_plugin``). The commands assemble
their outputs from the results with the same code as a local run, so the outputs are the
same, byte for byte, apart from ``settings.json`` (which records the options), as a local
run with one BLAS thread like each worker's (MKL's GEMM rounds by thread count: with more
threads P(sick) may differ by one float32 step; docs/scale.md).

Faults. Each task writes its result into the *work folder* (``--work``, by default
``OUT.dask-work`` beside ``--out``; it must be on a file system that the workers and the
client share) under a name made of a digest of everything the result depends on (the
options; weights, prototxts and image files by path, size and modification time; folders,
such as a folder of frames or of ground truth, by path only), first into a temporary name,
then renamed into place (atomic). A task whose file already exists
returns it without computing. So:

- a worker killed mid-task loses only that task; the scheduler runs it again elsewhere,
  and a task that runs twice writes the same file twice (nothing is duplicated);
- a rerun after the client was killed reuses every finished position and chunk;
- the work folder is removed when the command has finished its output.

A scheduler that does not answer within ``--scheduler-timeout`` seconds (default
:data:`DEFAULT_TIMEOUT_S`) is one sentence and exit status 2.

Threads: Caffe's BLAS uses its own threads; start workers with ``--nthreads 1`` and as many
worker processes as cores (``dask worker ADDRESS --nworkers N --nthreads 1``). Dask's
nanny sets OMP/MKL/OPENBLAS_NUM_THREADS=1 in the worker processes it starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from distributed import Client, WorkerPlugin, as_completed, get_worker

from data_prep.core.errors import UserError
from data_prep.core.grids import Grid
from data_prep.core.outdir import MARKER, check_location, claim_dir, read_marker
from data_prep.core.progress import progress_bar
from data_prep.core.stack import MANIFEST_CHANNEL, read_stack
from deadnet_caffe.checks import positive_float, positive_int
from deadnet_caffe.infer import grid_probs, upsample_at

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_CHUNK_FRAMES = 16
WORK_COMMAND = "dask-work"
_FORMAT = 1  # bump when the files of the work folder change meaning
#: Nets built in this (worker) process, per plugin name: one per worker thread and run.
NET_LOADS: Counter[str] = Counter()


def add_cluster_arguments(p) -> None:
    """The options of the Dask path (report and heatmap)."""
    g = p.add_argument_group("Dask cluster (docs/scale.md)")
    g.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="run the work on this Dask scheduler (tcp://HOST:PORT, or its --scheduler-file "
        "JSON); in this process when not given",
    )
    g.add_argument(
        "--scheduler-timeout",
        type=positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help="seconds to wait for the scheduler to answer",
    )
    g.add_argument(
        "--chunk-frames",
        type=positive_int,
        default=DEFAULT_CHUNK_FRAMES,
        help="analysed frames per task (--scheduler)",
    )
    g.add_argument(
        "--work",
        type=Path,
        default=None,
        help="folder of finished tasks, reused by a rerun, removed at the end (--scheduler); "
        "default OUT.dask-work beside --out; workers and client must both see it",
    )


def connect(address: str, timeout: float) -> Client:
    """A client of the scheduler at ``address``; UserError when none answers in ``timeout`` s.

    ``address`` is ``tcp://HOST:PORT`` (or another Dask protocol), or the JSON file that
    ``dask scheduler --scheduler-file FILE`` writes (the usual way on Slurm).
    """
    where = {"address": address}
    if address.endswith(".json"):
        if not Path(address).is_file():
            raise UserError(f"--scheduler {address}: no such scheduler file.")
        where = {"scheduler_file": address}
    else:
        from distributed.comm import parse_address
        from distributed.comm.addressing import parse_host_port
        from distributed.comm.registry import backends

        scheme, loc = parse_address(address)
        if scheme not in backends:  # the client would wait forever, not for the timeout
            raise UserError(
                f"--scheduler {address}: unknown protocol {scheme!r} "
                f"(Dask speaks {', '.join(sorted(backends))})."
            )
        if scheme in ("tcp", "tls", "ws", "wss"):
            try:
                parse_host_port(loc)
            except ValueError as err:
                raise UserError(f"--scheduler {address}: {err}; give tcp://HOST:PORT.") from None
    try:
        return Client(**where, timeout=timeout, set_as_default=False)
    except Exception as err:  # OSError / TimeoutError, or ValueError for a malformed address
        raise UserError(
            f"--scheduler {address}: no Dask scheduler answered within {timeout:g} s "
            f"({type(err).__name__}: {err})."
        ) from None


# --- On the workers ------------------------------------------------------------------------


@dataclass(frozen=True)
class NetSpec:
    """What a worker needs to build the nets: absolute paths as every worker sees them."""

    model: Path
    weights: Path
    gpu: int | None = None
    force_backward: bool = False  # Grad-CAM (report)
    dense_model: Path | None = None  # heatmap --mode dense


class NetPlugin(WorkerPlugin):
    """Loads the nets of :class:`NetSpec` once per worker thread, on its first task.

    Caffe's mode and device are per thread, and a net is not safe to share between threads,
    so each executor thread gets its own (one per worker with ``--nthreads 1``);
    :data:`NET_LOADS` counts them.
    """

    def __init__(self, spec: NetSpec, name: str) -> None:
        self.spec = spec
        self.name = name

    def setup(self, worker=None) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()

    def nets(self):
        """(DeployNet, DenseNet or None, GradCam or None) of the calling thread."""
        nets = getattr(self._local, "nets", None)
        if nets is None:
            from data_prep.core.paper import GRADCAM_LAYER
            from deadnet_caffe.gradcam import GradCam
            from deadnet_caffe.heatmap import DenseNet
            from deadnet_caffe.infer import DeployNet

            s = self.spec
            net = DeployNet(s.model, s.weights, s.gpu, force_backward=s.force_backward)
            dense = DenseNet.from_deploy(s.dense_model, net) if s.dense_model else None
            gc = GradCam(net, GRADCAM_LAYER) if s.force_backward else None
            nets = self._local.nets = (net, dense, gc)
            with self._lock:
                NET_LOADS[self.name] += 1
        return nets


def net_loads() -> dict[str, int]:
    """:data:`NET_LOADS` of this process (``client.run(net_loads)`` asks every worker)."""
    return dict(NET_LOADS)


@dataclass(frozen=True)
class Source:
    """One time-lapse as :func:`data_prep.core.stack.read_stack` reads it."""

    path: Path
    channel: int | None = None
    axes: str | None = None
    channel_source: str = MANIFEST_CHANNEL  # where the user sets the channel (messages)


@lru_cache(maxsize=2)
def _stack(src: Source, stamp: tuple[int, int]) -> np.ndarray:
    """The frames of one time-lapse; the worker keeps the last two read (chunks of a position)."""
    return read_stack(src.path, src.channel, src.axes, channel_source=src.channel_source)


def _read(src: Source) -> np.ndarray:
    st = Path(src.path).stat()
    return _stack(src, (st.st_mtime_ns, st.st_size))


def _write_atomic(dest: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``dest``, then rename it to ``dest``."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Chunk:
    """Heat-map values of the frames ``ids`` of one time-lapse, on its window grid."""

    plugin: str
    source: Source
    ids: tuple[int, ...]
    mode: str  # "exact" or "dense"
    stride: int
    batch: int
    dest: Path


def chunk_task(c: Chunk) -> Path:
    """Compute (or find) one chunk and write it to ``c.dest`` (npz: values (n, M, L), cy, cx).

    Exact mode: :func:`~deadnet_caffe.infer.grid_probs` at the window centres, what
    :func:`~deadnet_caffe.heatmap.exact_heatmap` upsamples; dense mode: the fully
    convolutional net's grid (:meth:`~deadnet_caffe.heatmap.DenseNet.probs`).
    """
    if c.dest.is_file():
        return c.dest
    from deadnet_caffe.heatmap import local_normalize

    net, dense, _ = get_worker().plugins[c.plugin].nets()
    frames = _read(c.source)
    values = []
    for t in c.ids:
        if c.mode == "dense":
            prob, cy, cx = dense.probs(local_normalize(frames[t]))
        else:
            grid = Grid.over(*frames[t].shape, c.stride)
            prob, (cy, cx) = grid_probs(frames[t], grid, net.p_sick, c.batch), grid.centres()
        values.append(prob)
    buf = _npz(values=np.stack(values), cy=cy, cx=cx)
    _write_atomic(c.dest, buf)
    return c.dest


def _npz(**arrays) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


class ChunkHeat:
    """A ``heat`` function (frame -> P(sick) map) that replays chunk files in order.

    Called once per analysed frame, in the order of ``files`` (sources, then chunks, then
    frames), it returns the frame's (H, W) float32 map upsampled from the chunk's values
    with :func:`~deadnet_caffe.infer.upsample_at`: the same map as a local run.

    Parameters
    ----------
    files : chunk files of each source, ``[[path, ...], ...]``.
    """

    def __init__(self, files: list[list[Path]]) -> None:
        self._values = self._replay(files)

    @staticmethod
    def _replay(files):
        for paths in files:
            for path in paths:
                with np.load(path) as z:
                    values, cy, cx = z["values"], z["cy"], z["cx"]
                for v in values:
                    yield v, cy, cx

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        v, cy, cx = next(self._values)
        return upsample_at(v, cy, cx, *frame.shape)


@dataclass(frozen=True)
class PositionJob:
    """The report's result of one position, from its chunks."""

    plugin: str
    pos: object  # data_prep.core.manifest.Position
    ids: tuple[int, ...]
    gradcam_crops: int
    dest: Path


def position_task(job: PositionJob, chunk_paths: list[Path]):
    """Compute (or find) a position's :class:`~deadnet_caffe.report.PositionResult`."""
    if job.dest.is_file():
        return pickle.loads(job.dest.read_bytes())
    from deadnet_caffe.report import score_position

    _, _, gc = get_worker().plugins[job.plugin].nets()
    frames = _read(Source(job.pos.path, job.pos.channel))
    heat = ChunkHeat([chunk_paths])
    probs = np.stack([heat(frames[t]) for t in job.ids])
    res = score_position(job.pos, frames, list(job.ids), probs, gc, job.gradcam_crops)
    _write_atomic(job.dest, pickle.dumps(res))
    return res


# --- On the client ---------------------------------------------------------------------------


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, Path) and p.is_file():
            st = p.stat()
            p = (str(p), st.st_size, st.st_mtime_ns)
        h.update(json.dumps(p, default=str).encode())
    return h.hexdigest()[:24]


class WorkDir:
    """The work folder of one command run: finished task files, reused by a rerun.

    Parameters
    ----------
    folder : ``--work``, or None for ``OUT.dask-work`` beside ``out``.
    out : the command's ``--out``; inputs : its inputs, refused as work folders (outdir rules).
    """

    def __init__(self, folder: Path | None, out: Path, inputs) -> None:
        given = self.location(folder, out, inputs)
        existed_bare = given.exists() and read_marker(given) is None
        self.root = claim_dir(given, WORK_COMMAND, [*inputs, out], option="--work")
        self._keep_root = existed_bare  # an empty folder the user made: leave it, emptied
        for sub in ("chunks", "positions"):
            (self.root / sub).mkdir(exist_ok=True)

    @staticmethod
    def location(folder: Path | None, out: Path, inputs) -> Path:
        """``--work`` or its default, checked (nothing written); UserError where unsafe."""
        given = folder if folder is not None else out.parent / f"{out.name}.dask-work"
        check_location(given, WORK_COMMAND, [*inputs, out], option="--work")
        return given

    def chunk(self, key: str) -> Path:
        return self.root / "chunks" / f"{key}.npz"

    def position(self, key: str) -> Path:
        return self.root / "positions" / f"{key}.pkl"

    def remove(self) -> None:
        """Remove what the runs wrote (and the folder when a run made it)."""
        for sub in ("chunks", "positions"):
            shutil.rmtree(self.root / sub, ignore_errors=True)
        (self.root / MARKER).unlink(missing_ok=True)
        if not self._keep_root:
            with contextlib.suppress(OSError):  # a file someone else put there
                self.root.rmdir()


class ClusterRun:
    """A connected client, the worker plugin of one net and the work folder of a command.

    Use as a context manager; on leaving it the plugin is unregistered and the client
    closed. Call :meth:`done` after the command's output is in place.
    """

    def __init__(self, args, spec: NetSpec, inputs) -> None:
        self.spec = spec
        self.chunk_frames = args.chunk_frames
        WorkDir.location(args.work, args.out, inputs)  # refused before anything is written
        self.client = connect(args.scheduler, args.scheduler_timeout)
        try:
            self.work = WorkDir(args.work, args.out, inputs)
        except BaseException:
            self.client.close()
            raise
        self.net_key = _digest(_FORMAT, spec.model, spec.weights, spec.dense_model)
        self.plugin = f"deadnet-net-{_digest(self.net_key, spec.gpu, spec.force_backward)}"
        self.client.register_plugin(NetPlugin(spec, self.plugin), name=self.plugin)
        self.reused = 0

    def __enter__(self) -> ClusterRun:
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):  # a scheduler that is gone holds no plugin
            self.client.unregister_worker_plugin(self.plugin)
        self.client.close()

    def done(self) -> None:
        self.work.remove()

    def _chunks(self, key, source: Source, ids, mode, stride, batch) -> list:
        """Futures of the chunk files of one time-lapse (a task finds a finished file and
        returns it at once)."""
        out = []
        for i in range(0, len(ids), self.chunk_frames):
            part = tuple(ids[i : i + self.chunk_frames])
            name = f"{key}-{part[0]:05d}-{part[-1]:05d}"
            c = Chunk(self.plugin, source, part, mode, stride, batch, self.work.chunk(name))
            out.append(self.client.submit(chunk_task, c, key=f"deadnet-chunk-{name}", pure=False))
        return out

    def report_results(
        self,
        positions,
        stride: int,
        every: int,
        batch: int,
        gradcam_crops: int,
        progress: bool | None = None,
        keep_maps: list[Path] | None = None,
    ):
        """The report's PositionResult of every position, in order (finished ones reused).

        keep_maps : the folder of each position's kept heat maps
            (:func:`deadnet_caffe.report.write_position_maps`, written here, on the client,
            from the chunk files), or None.
        """
        from deadnet_caffe.report import write_position_maps

        results: dict[int, object] = {}
        futures, chunks = {}, {}
        for i, pos in enumerate(positions):
            key = _digest(
                self.net_key, "report", pos.path, pos.channel, pos.ground_truth, stride, every,
                batch, gradcam_crops, pos.key, pos.dose_s, pos.frame_interval_min,
            )  # fmt: skip
            dest = self.work.position(key)
            ids = tuple(range(0, pos.n_frames, every))
            reused = dest.is_file()
            if reused:
                results[i] = pickle.loads(dest.read_bytes())
                self.reused += 1
            if reused and keep_maps is None:
                continue
            src = Source(pos.path, pos.channel)
            chunks[i] = self._chunks(key, src, ids, "exact", stride, batch)
            if not reused:
                job = PositionJob(self.plugin, pos, ids, gradcam_crops, dest)
                fut = self.client.submit(
                    position_task, job, chunks[i], key=f"deadnet-position-{key}", pure=False
                )
                futures[fut] = i
        bar = progress_bar(
            total=len(futures), desc="positions", unit="position", leave=False, progress=progress
        )
        for fut in as_completed(list(futures), loop=self.client.loop):
            results[futures[fut]] = fut.result()
            bar.update()
        bar.close()
        if keep_maps is not None:
            for i, pos in enumerate(positions):
                frames = _read(Source(pos.path, pos.channel))
                ids = results[i].frames
                heat = ChunkHeat([self.client.gather(chunks[i])])
                probs = np.stack([heat(frames[t]) for t in ids])
                write_position_maps(keep_maps[i], pos, frames, ids, probs, every)
        return [results[i] for i in range(len(positions))]

    def heatmap_chunks(self, sources, mode: str, stride: int, every: int, batch: int) -> list:
        """Chunk files of every time-lapse: ``[[path, ...] per source]`` in order.

        sources : (:class:`Source`, n_frames) of each time-lapse, paths absolute.
        """
        futures = []
        for src, n_frames in sources:
            key = _digest(
                self.net_key, "heatmap", src.path, src.channel, src.axes, mode, stride, every, batch
            )
            ids = tuple(range(0, n_frames, every))
            futures.append(self._chunks(key, src, ids, mode, stride, batch))
        return [self.client.gather(f) for f in futures]


def net_spec(args, force_backward: bool = False, dense_model: Path | None = None) -> NetSpec:
    """The NetSpec of a command's ``--model``, ``--weights``, ``--gpu`` (absolute paths)."""
    return NetSpec(
        Path(args.model).resolve(),
        Path(args.weights).resolve(),
        args.gpu,
        force_backward,
        Path(dense_model).resolve() if dense_model else None,
    )
