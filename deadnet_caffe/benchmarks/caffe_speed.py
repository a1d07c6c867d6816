"""Caffe's CPU speed on the published DeadNet net, against PyTorch's CPU build (issue 6.5).

One training iteration (forward, backward and the Nesterov update) of the published net
(paper Table 1 and the released prototxts: batch 20, 1 x 220 x 220 input, eight
conv-BatchNorm-Scale-ReLU blocks, four max-poolings, three fully connected layers) is timed
in pycaffe and in PyTorch on the same machine in the same run, one iteration of each in
turn (:func:`interleaved_seconds`); the result is the ratio
``caffe_over_torch_ratio`` (goal: 1.0 or less), with each framework's default threading,
and ``caffe_over_torch_ratio_1thread`` with one thread each. A per-layer profile of the
Caffe net (forward and backward of each layer, summed per layer type; the rows are written
to ``caffe_speed_layers.csv``) says where the time goes. docs/cpu-speed.md explains the
figures, the BLAS choice and the project's patches (third_party/caffe/patches/).

The net is built here from :mod:`data_prep.core.paper`, with an ``Input`` layer in place of
the LMDB ``Data`` layer, so that no data set is needed and both frameworks see the same
random batch. Each framework runs in a child process of its own (:class:`StepWorker`) and
times its step there: in one process the two share an allocator and the kernel's view of
one address space, and with Caffe's huge-page blobs (patch 0007) PyTorch's step ran 15-20%
slower beside Caffe than alone (docs/cpu-speed.md), which would have flattered the ratio.
PyTorch is optional (``pip install -e '.[bench]'``); without it the Caffe
figures are still reported and the ratio is ``None`` with a note saying why.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import functools
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_prep.core import paper
from deadnet_caffe.caffe_env import import_caffe

NAME = "caffe_speed"

# Iterations timed (after one warm-up iteration); the best of them is reported, which is the
# figure least disturbed by other processes on a shared machine.
_ITERS = 8
_ITERS_QUICK = 2
_QUICK_BATCH = 2
_QUICK_SIDE = 76  # --quick: blobs 68, 34, 17, 9 and 5 pixels wide


def deadnet_train_net(batch: int = paper.BATCH_SIZE, side: int = paper.NET_INPUT_PX) -> str:
    """The published Data Set A train/val net as prototxt text, fed by ``Input`` layers.

    Loads ``prototxt/dataset_a/train_val.prototxt`` (the net ``deadnet train`` runs) and
    replaces its Data layers by ``Input`` layers and drops its Accuracy layers, so that the
    benchmark times exactly the published layers on a batch held in memory.

    Parameters
    ----------
    batch, side : int
        Batch size and input side; the published net uses 20 and 220 (section 2.4).

    Returns
    -------
    str
        NetParameter text with blobs ``data`` (batch, 1, side, side) float32 and ``label``
        (batch,); build it in the TRAIN phase (batch statistics, dropout 0.5).
    """
    from google.protobuf import text_format

    from deadnet_caffe.netspec import load_net_param, published

    param = load_net_param(published("dataset_a/train_val.prototxt"))
    out = type(param)(name=param.name)
    for top, dims in (("data", [batch, 1, side, side]), ("label", [batch])):
        layer = out.layer.add(name=top, type="Input", top=[top])
        layer.input_param.shape.add(dim=dims)
    for layer in param.layer:
        if layer.type not in ("Data", "Accuracy"):
            out.layer.add().CopyFrom(layer)
    return text_format.MessageToString(out)


def _solver_text(net_path: Path) -> str:
    return "\n".join(
        [
            f'net: "{net_path}"',
            f'type: "{paper.SOLVER_TYPE}"',
            f"base_lr: {paper.BASE_LR}",
            f'lr_policy: "{paper.LR_POLICY}"',
            f"gamma: {paper.LR_GAMMA}",
            f"power: {paper.LR_POWER}",
            f"momentum: {paper.MOMENTUM}",
            f"weight_decay: {paper.WEIGHT_DECAY_A}",
            "max_iter: 1000000",
            "display: 0",
            "snapshot: 0",
            "solver_mode: CPU",
            "",
        ]
    )


def _batch(batch: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 1, side, side), dtype=np.float32)
    y = (np.arange(batch) % 2).astype(np.float32)
    return x, y


def caffe_blas() -> tuple[str, Path | None]:
    """Which BLAS the loaded libcaffe uses, and the library's path.

    Read from this process's memory map after ``import caffe``: ``("mkl", libmkl_intel_lp64)``
    for the default x86-64 build, ``("openblas", libopenblas)`` for ``build.sh --blas
    openblas``, or ``("unknown", None)``.
    """
    import_caffe()
    maps = Path("/proc/self/maps").read_text().split("\n")
    for name, marker in (("mkl", "libmkl_intel_lp64.so"), ("openblas", "libopenblas.so")):
        hits = [line.split()[-1] for line in maps if marker in line]
        if hits:
            return name, Path(hits[0])
    return "unknown", None


def _blas_describe(kind: str, lib: Path | None) -> str:
    if kind == "mkl" and lib is not None:
        buf = ctypes.create_string_buffer(256)
        ctypes.CDLL(str(lib)).MKL_Get_Version_String(buf, len(buf))
        return f"{buf.value.decode().strip()}, MKL_CBWR={os.environ.get('MKL_CBWR', 'unset')}"
    if kind == "openblas":
        coretype = os.environ.get("OPENBLAS_CORETYPE", "OpenBLAS's own choice")
        return f"OpenBLAS {lib.name if lib else ''}, OPENBLAS_CORETYPE={coretype}"
    return kind


@contextlib.contextmanager
def caffe_threads(n: int | None) -> Iterator[None]:
    """Run Caffe's BLAS (MKL or OpenBLAS) and its OpenMP loops on ``n`` threads in the block.

    ``None`` leaves the thread counts alone (both default to all cores, or to
    ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS``).
    """
    if n is None:
        yield
        return
    kind, lib = caffe_blas()
    omp = ctypes.CDLL("libgomp.so.1")
    blas = ctypes.CDLL(str(lib)) if lib is not None else None
    get_set = {
        "mkl": ("MKL_Get_Max_Threads", "MKL_Set_Num_Threads"),  # the C (by-value) entry points
        "openblas": ("openblas_get_num_threads", "openblas_set_num_threads"),
    }.get(kind)
    old_omp = omp.omp_get_max_threads()
    old_blas = getattr(blas, get_set[0])() if blas and get_set else None
    omp.omp_set_num_threads(n)
    if old_blas is not None:
        getattr(blas, get_set[1])(n)
    try:
        yield
    finally:
        omp.omp_set_num_threads(old_omp)
        if old_blas is not None:
            getattr(blas, get_set[1])(old_blas)


def caffe_step(batch: int, side: int):
    """A pycaffe solver of the published net on a fixed random batch, and its step.

    Returns
    -------
    net : caffe.Net
        The solver's train net (for :func:`layer_profile`).
    step : callable
        One ``solver.step(1)``: forward, backward and the Nesterov update.
    """
    caffe = import_caffe()
    caffe.set_mode_cpu()
    x, y = _batch(batch, side)
    with tempfile.TemporaryDirectory(prefix="caffe-speed-") as tmp:
        net_path = Path(tmp) / "net.prototxt"
        net_path.write_text(deadnet_train_net(batch, side))
        solver_path = Path(tmp) / "solver.prototxt"
        solver_path.write_text(_solver_text(net_path))
        solver = caffe.get_solver(str(solver_path))
    net = solver.net
    net.blobs["data"].data[...] = x
    net.blobs["label"].data[...] = y
    return net, lambda: solver.step(1)


def interleaved_seconds(steps: dict, iters: int) -> dict:
    """Best seconds of each step, timed in alternation so that all see the same machine.

    Parameters
    ----------
    steps : dict
        name -> callable that runs one step and returns the seconds it took.
    iters : int
        Timed rounds; each round runs every step once. One untimed warm-up round comes
        first (buffers, thread pools).

    Returns
    -------
    dict
        name -> best seconds over the rounds. On a shared machine the load drifts during a
        run; alternating the frameworks puts both under the same drift, which keeps their
        ratio steadier than timing one after the other.
    """
    best = dict.fromkeys(steps, float("inf"))
    for r in range(iters + 1):
        for name, step in steps.items():
            dt = step()
            if r:
                best[name] = min(best[name], dt)
    return best


class StepWorker:
    """One framework's training step (:func:`caffe_step` or :func:`torch_step`) in a child
    process, which times each step itself; :meth:`step` asks for one and returns its seconds.

    The child inherits this process's environment (``caffe_env``'s OpenMP and MKL defaults
    included) and its stderr; it reads thread counts from stdin, one per step (0: the
    framework's default), and answers each with the step's seconds.
    """

    def __init__(self, framework: str, batch: int, side: int):
        self.framework = framework
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, framework, str(batch), str(side)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self.proc.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError(f"the {framework} benchmark worker did not start (see above).")

    def step(self, threads: int | None) -> float:
        self.proc.stdin.write(f"{threads or 0}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the {self.framework} benchmark worker died (see above).")
        return float(answer)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()

    def __enter__(self) -> StepWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _serve_steps(framework: str, batch: int, side: int) -> None:
    """The child side of :class:`StepWorker`."""
    if framework == "caffe":
        _, step = caffe_step(batch, side)
        threads = caffe_threads
    else:
        step = torch_step(batch, side)
        threads = torch_threads
    print("ready", flush=True)
    for line in sys.stdin:
        with threads(int(line) or None):
            t0 = time.perf_counter()
            step()
            dt = time.perf_counter() - t0
        print(repr(dt), flush=True)


def layer_profile(net, reps: int) -> dict:
    """Per-layer forward and backward seconds of a pycaffe net (best of ``reps`` each).

    Each repetition is one ordinary forward pass and one backward pass, run layer by
    layer (``net._forward(i, i)`` upwards, ``net._backward(i, i)`` downwards, as
    ``Net::Forward`` and ``Net::Backward`` do), so that in-place layers see the values
    of a real iteration rather than their own output fed back to them.
    """
    names, layers = list(net._layer_names), list(net.layers)
    fwd = [float("inf")] * len(layers)
    bwd = [float("inf")] * len(layers)
    for _ in range(reps):
        for i in range(len(layers)):
            t0 = time.perf_counter()
            net._forward(i, i)
            fwd[i] = min(fwd[i], time.perf_counter() - t0)
        for i in reversed(range(len(layers))):
            t0 = time.perf_counter()
            net._backward(i, i)
            bwd[i] = min(bwd[i], time.perf_counter() - t0)
    rows = [
        (names[i], layer.type, fwd[i], bwd[i])
        for i, layer in enumerate(layers)
        if layer.type != "Input"
    ]
    by_type: dict[str, float] = defaultdict(float)
    for _, kind, f, b in rows:
        by_type[kind] += f + b
    return {"by_layer": rows, "by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1]))}


def torch_step(batch: int, side: int):
    """The same net in PyTorch (CPU, train mode) on the same batch, and its step.

    Same layers, shapes and update rule as :func:`deadnet_train_net` and the published
    solver: BatchNorm with batch statistics and affine scale/shift (Caffe's BatchNorm +
    Scale), ceiling max-pooling, dropout 0.5, cross-entropy, SGD with Nesterov momentum 0.9
    and weight decay.
    """
    import torch
    from torch import nn

    layers: list[nn.Module] = []
    in_ch = 1
    for i, (_, num_output, kernel, pad) in enumerate(paper.CONV_LAYERS):
        layers += [
            nn.Conv2d(in_ch, num_output, kernel, padding=pad),
            nn.BatchNorm2d(num_output, momentum=1 - paper.BN_MOVING_AVERAGE_FRACTION),
            nn.ReLU(inplace=True),
        ]
        in_ch = num_output
        if i % 2 == 1:
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
    with torch.no_grad():
        in_features = nn.Sequential(*layers)(torch.zeros(1, 1, side, side)).numel()
    layers.append(nn.Flatten())
    for j, (_, num_output) in enumerate(paper.FC_LAYERS):
        layers.append(nn.Linear(in_features, num_output))
        if j < len(paper.FC_LAYERS) - 1:
            layers += [nn.ReLU(inplace=True), nn.Dropout(paper.DROPOUT_RATIO)]
        in_features = num_output
    model = nn.Sequential(*layers).train()
    opt = torch.optim.SGD(
        model.parameters(),
        lr=paper.BASE_LR,
        momentum=paper.MOMENTUM,
        nesterov=True,
        weight_decay=paper.WEIGHT_DECAY_A,
    )
    x, y = _batch(batch, side)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        loss_fn(model(xt), yt).backward()
        opt.step()

    return step


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """PyTorch on ``n`` threads within the block (``None``: its default, all cores)."""
    import torch

    default = torch.get_num_threads()
    torch.set_num_threads(n or default)
    try:
        yield
    finally:
        torch.set_num_threads(default)


def run(out_dir: Path, quick: bool) -> dict:
    """Time both frameworks; write the per-layer profile to ``out_dir/caffe_speed_layers.csv``.

    Ratios are reported twice: with each framework's default threading (all cores), the
    figure of issue 6, and with one thread each, which a machine shared with other jobs
    disturbs much less (busy cores hurt spinning thread pools more than single threads).
    """
    batch, side = (_QUICK_BATCH, _QUICK_SIDE) if quick else (paper.BATCH_SIZE, paper.NET_INPUT_PX)
    iters = _ITERS_QUICK if quick else _ITERS
    have_torch = importlib.util.find_spec("torch") is not None
    with contextlib.ExitStack() as stack:
        workers = {"caffe": stack.enter_context(StepWorker("caffe", batch, side))}
        if have_torch:
            workers["torch"] = stack.enter_context(StepWorker("torch", batch, side))
        steps = {
            (name, n): functools.partial(worker.step, n)
            for name, worker in workers.items()
            for n in (None, 1)
        }
        best = interleaved_seconds(steps, iters)
    net, _ = caffe_step(batch, side)  # the profile runs here, after the workers have gone
    profile = layer_profile(net, iters)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "caffe_speed_layers.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "type", "forward_s", "backward_s"])
        for name, kind, fwd, bwd in profile["by_layer"]:
            w.writerow([name, kind, f"{fwd:.5f}", f"{bwd:.5f}"])
    res: dict = {
        "batch": batch,
        "input_side": side,
        "cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "caffe_blas": _blas_describe(*caffe_blas()),
        "caffe_s_per_iter": round(best["caffe", None], 4),
        "caffe_s_per_iter_1thread": round(best["caffe", 1], 4),
        "caffe_s_by_layer_type": {k: round(v, 4) for k, v in profile["by_type"].items()},
    }
    if not have_torch:
        res["torch_s_per_iter"] = None
        res["caffe_over_torch_ratio"] = None
        res["note"] = (
            "PyTorch is not installed, so there is no baseline: "
            "run `pip install -e '.[bench]'` (make bench does) for the ratio."
        )
        print(f"  NOTE: {res['note']}", flush=True)
        return res
    res["torch_s_per_iter"] = round(best["torch", None], 4)
    res["torch_s_per_iter_1thread"] = round(best["torch", 1], 4)
    res["caffe_over_torch_ratio"] = round(best["caffe", None] / best["torch", None], 3)
    res["caffe_over_torch_ratio_1thread"] = round(best["caffe", 1] / best["torch", 1], 3)
    return res


if __name__ == "__main__":
    _serve_steps(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
