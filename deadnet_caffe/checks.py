"""Checks of the Caffe-side inputs and of numeric options, before any work starts.

Every command passes what it gives Caffe through here, so that a bad input gets one
sentence naming the file or option (:class:`~data_prep.core.errors.UserError`, exit
status 2) instead of a glog abort, a SIGBUS, a traceback or a silently wrong answer.
Raw data (text encodings, TIFF headers, pixels) are checked in :mod:`data_prep.core.checks`.

Numeric options
    argparse ``type=`` helpers (:func:`positive_int`, :func:`finite_float`, ...) shared by
    every command: NaN and infinity are refused wherever a float is read, counts and sizes
    must be positive, seeds lie in ``[0, 2**32)``.
Prototxts
    are parsed with Caffe's own ``caffe_pb2`` (by :func:`deadnet_caffe.netspec.load_net_param`)
    and then checked by :func:`check_net_param`: every layer type is in Caffe's layer
    registry (``caffe.layer_type_list()``), every bottom blob is made by an earlier layer in
    each phase the layer runs in, and the sizes that Caffe CHECKs (input dims, outputs,
    kernels, strides) are positive. Solvers get :func:`check_solver_param` (finite numbers,
    positive rates and counts, a known learning-rate policy).
Weights
    :func:`check_weights`: the .caffemodel parses, and *every* layer of the net that has
    parameters finds them there, with the same number of blobs and the same shapes (Caffe
    leaves a missing layer at its filler values without a word).
LMDBs
    are checked by :func:`data_prep.core.datum.check_lmdb` (the one Datum/LMDB codec).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from data_prep.core.errors import UserError
from data_prep.core.stack import OPTION_CHANNEL, read_stack
from deadnet_caffe.caffe_env import check_net_builds, import_caffe

SEED_LIMIT = 2**32  # numpy's legacy seeds and Caffe's random_seed both take 32-bit values

# --- Numeric options (argparse types) -------------------------------------------------------


def _number(text: str, kind: type, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (counts, sizes, strides, batch sizes)."""
    value = _number(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (numbers of copies, device numbers)."""
    value = _number(text, int, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def seed(text: str) -> int:
    """A random seed in ``[0, 2**32)``."""
    value = _number(text, int, "an integer")
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"{text} is not a seed in [0, 2**32)")
    return value


def finite_float(text: str) -> float:
    """Any finite number (NaN and infinity refused)."""
    return _number(text, float, "a number")


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates, step sizes, time intervals)."""
    value = _number(text, float, "a number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (doses, penalties, margins)."""
    value = _number(text, float, "a number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def probability(text: str) -> float:
    """A number in [0, 1] (thresholds on P(sick))."""
    value = _number(text, float, "a number")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return value


def open_fraction(text: str) -> float:
    """A number strictly between 0 and 1 (the test fraction of a split)."""
    value = _number(text, float, "a number")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not strictly between 0 and 1")
    return value


# --- Prototxts ------------------------------------------------------------------------------


def _runs_in(layer, phase: int) -> bool:
    """Whether ``layer`` is part of the net in ``phase`` (Caffe's StateMeetsRule, level 0,
    no stages)."""

    def meets(rule) -> bool:
        return (
            (not rule.HasField("phase") or rule.phase == phase)
            and (not rule.HasField("min_level") or rule.min_level <= 0)
            and (not rule.HasField("max_level") or rule.max_level >= 0)
            and not rule.stage
        )

    if layer.include:
        return any(meets(r) for r in layer.include)
    return not any(meets(r) for r in layer.exclude)


def _sizes(layer) -> list[tuple[str, list[int]]]:
    """The sizes of a layer that Caffe CHECKs to be positive: (field, values) pairs."""
    out = []
    if layer.type == "Input":
        out += [("input_param.shape.dim", list(s.dim)) for s in layer.input_param.shape]
    elif layer.type in ("Convolution", "Deconvolution"):
        c = layer.convolution_param
        out += [("num_output", [c.num_output]), ("kernel_size", list(c.kernel_size))]
        out += [("stride", list(c.stride))]
        out += [(f, [getattr(c, f)]) for f in ("kernel_h", "kernel_w") if c.HasField(f)]
    elif layer.type == "Data":
        out.append(("data_param.batch_size", [layer.data_param.batch_size]))
    elif layer.type == "InnerProduct":
        out.append(("num_output", [layer.inner_product_param.num_output]))
    elif layer.type == "Pooling" and not layer.pooling_param.global_pooling:
        p = layer.pooling_param
        out += [(f, [getattr(p, f)]) for f in ("kernel_size", "stride") if p.HasField(f)]
    return out


def check_net_param(param, path: Path | str) -> None:
    """Check a parsed net before Caffe builds it (module docstring).

    Parameters
    ----------
    param : caffe_pb2.NetParameter, as parsed from ``path``.
    path : the prototxt (for the message).

    Raises
    ------
    UserError
        Naming the file, the layer and the problem.
    """
    caffe = import_caffe()
    if param.layers:  # the V1 format: types are enums, Caffe upgrades the net itself
        return
    if not param.layer:
        raise UserError(f"{path}: the net prototxt defines no layers.")
    known = set(caffe.layer_type_list())
    for layer in param.layer:
        if layer.type not in known:
            raise UserError(
                f"{path}: layer '{layer.name}' has type '{layer.type}', which this Caffe "
                "does not have (see caffe.layer_type_list())."
            )
        for field, values in _sizes(layer):
            if any(v < 1 for v in values):
                raise UserError(
                    f"{path}: layer '{layer.name}' has {field} {values}; it must be positive."
                )
    for phase, phase_name in ((caffe.TRAIN, "TRAIN"), (caffe.TEST, "TEST")):
        blobs = set(param.input)
        for layer in param.layer:
            if not _runs_in(layer, phase):
                continue
            for bottom in layer.bottom:
                if bottom not in blobs:
                    raise UserError(
                        f"{path}: layer '{layer.name}' reads blob '{bottom}', which no earlier "
                        f"layer makes in the {phase_name} phase."
                    )
            blobs.update(layer.top)


_LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def check_solver_param(param, path: Path | str) -> None:
    """Check a parsed solver's numbers before Caffe's solver CHECKs them (or trains on NaN).

    Every float field that is set must be finite; ``base_lr`` not negative (0 freezes every
    layer, which Caffe allows and the fine-tuning test uses), ``max_iter`` positive,
    ``test_iter`` and ``test_interval`` positive where given, ``lr_policy`` one of Caffe's.

    Raises
    ------
    UserError
        Naming the solver file and the field.
    """
    for field, value in param.ListFields():
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{path}: solver field {field.name} is {value}, not a finite number.")
    if param.HasField("base_lr") and param.base_lr < 0:
        raise UserError(f"{path}: solver field base_lr is {param.base_lr}; it must be >= 0.")
    for name in ("max_iter", "test_interval"):
        if param.HasField(name) and getattr(param, name) <= 0:
            raise UserError(
                f"{path}: solver field {name} is {getattr(param, name)}; it must be positive."
            )
    if any(n < 1 for n in param.test_iter):
        raise UserError(
            f"{path}: solver field test_iter is {list(param.test_iter)}; each must be positive."
        )
    if param.HasField("lr_policy") and param.lr_policy not in _LR_POLICIES:
        raise UserError(
            f"{path}: solver lr_policy {param.lr_policy!r} is not one of Caffe's "
            f"({', '.join(_LR_POLICIES)})."
        )


# --- Weights --------------------------------------------------------------------------------


def _blob_shape(blob) -> tuple[int, ...]:
    return tuple(blob.shape.dim) or (blob.num, blob.channels, blob.height, blob.width)


def check_weights(prototxt: Path | str, weights: Path | str, phase: str = "TEST") -> None:
    """Check that a .caffemodel holds every parameter blob of the net, in the net's shapes.

    Caffe aborts the whole process on a shape mismatch (e.g. published weights with the
    Table 1 FLOOR net, whose fc1 has 13 x 13 x 128 inputs instead of 14 x 14 x 128), and
    silently keeps filler values for a layer that the file lacks (a .caffemodel cut short
    at a layer boundary), so both are checked here first. Extra layers in the file (a
    training net's) are fine.

    Raises
    ------
    UserError
        Naming the weights file, the layer and the problem.
    """
    from google.protobuf.message import DecodeError

    caffe = import_caffe()
    from caffe.proto import caffe_pb2

    weights = Path(weights)
    try:
        data = weights.read_bytes()
    except OSError as err:
        raise UserError(f"{weights}: cannot read the weights ({err.strerror}).") from None
    model = caffe_pb2.NetParameter()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as err:
        raise UserError(f"{weights}: not a Caffe .caffemodel ({err}).") from None
    have = {layer.name: layer.blobs for layer in [*model.layer, *model.layers] if layer.blobs}
    if not have:
        raise UserError(f"{weights}: holds no weights (not a Caffe .caffemodel, or empty).")
    ph = {"TRAIN": caffe.TRAIN, "TEST": caffe.TEST}[phase]
    check_net_builds(prototxt, phase)
    net = caffe.Net(str(prototxt), ph)
    missing = [name for name in net.params if name not in have]
    if missing:
        raise UserError(
            f"{weights}: no weights for layer(s) {', '.join(missing)} of {prototxt} "
            "(a truncated or partial .caffemodel?)."
        )
    for name, mine in net.params.items():
        theirs = have[name]
        if len(mine) != len(theirs):
            raise UserError(
                f"{weights}: layer '{name}' has {len(theirs)} blobs but {prototxt} "
                f"expects {len(mine)}."
            )
        for i, (blob, target) in enumerate(zip(theirs, mine, strict=True)):
            shape = _blob_shape(blob)
            n_values = len(blob.data) or len(blob.double_data)
            if (
                math.prod(shape) != target.data.size
                or (blob.shape.dim and shape != target.data.shape)
                or n_values != target.data.size
            ):
                raise UserError(
                    f"{weights}: blob {i} of layer '{name}' has shape {shape} "
                    f"({n_values} values) but {prototxt} expects {target.data.shape} "
                    "(wrong net variant, or a damaged file?)."
                )


# --- Caches ---------------------------------------------------------------------------------


def load_npz(path: Path | str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an .npz file (no pickles); UserError if it is not one.

    Raises
    ------
    UserError
        The file is not a readable .npz or lacks one of ``keys``.
    """
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise UserError(
                    f"{path}: the .npz lacks {', '.join(missing)}; delete it to recompute it."
                )
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(
            f"{path}: not a readable .npz cache ({err}); delete it to recompute it."
        ) from None


# --- Images ---------------------------------------------------------------------------------


def check_image_sources(
    sources: list[tuple[Path, int | None, int | None]],
    axes: str | None = None,
    channel_source: str = OPTION_CHANNEL,
) -> None:
    """Read and check every image source of a command before its work starts.

    Parameters
    ----------
    sources : (path, channel, frames) triples: an image, TIFF stack or folder, the channel
        of a multi-channel stack (or None), and the frame count that the manifest gives
        (or None for loose inputs).
    axes : the TIFFs' axes (``--axes`` of loose inputs), None for the files' own.
    channel_source : where the user sets the channel (:class:`data_prep.core.stack.Stack`).

    Raises
    ------
    UserError
        Whatever :func:`data_prep.core.stack.read_stack` refuses (see
        :mod:`data_prep.core.checks`), or a frame count other than the manifest's.
    """
    for path, channel, n_frames in sources:
        frames = read_stack(path, channel, axes, channel_source=channel_source)
        if n_frames is not None and len(frames) != n_frames:
            raise UserError(f"{path}: holds {len(frames)} frames but the manifest says {n_frames}.")


# --- Training logs --------------------------------------------------------------------------


def check_caffe_log(path: Path | str) -> None:
    """Refuse a file that holds no training iteration of a Caffe log (garbage, another log).

    A missing file is left to the caller (which says what folder it expected).

    Raises
    ------
    UserError
        Naming the log.
    """
    from deadnet_caffe import logparse

    path = Path(path)
    if not path.is_file():
        return
    log = logparse.parse_log(path)
    if not log.train_loss and not log.test:
        raise UserError(f"{path}: holds no training iteration (not a log of caffe train).")
