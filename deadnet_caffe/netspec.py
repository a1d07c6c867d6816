"""Reading, adapting and instantiating the prototxt nets and solvers of ``prototxt/``.

The published nets name their LMDBs relatively (``train.lmdb``, ``test.lmdb``, the two
folders that ``deadnet dataset A|B --out DIR`` writes) and solvers their net (``net:
"train_val.prototxt"``); the training runner resolves both for one run
(:func:`deadnet_caffe.train.resolve_net`, :func:`deadnet_caffe.train.solver_net_file`).
Everything here works on copies of Caffe's own protobuf messages (``caffe_pb2``), so the
files in ``prototxt/`` are never modified.

The published prototxts ship inside the package (``deadnet_caffe/prototxt`` is a link to the
project's top-level ``prototxt/`` folder, and pyproject.toml lists its files as package
data), so :func:`published` finds them from any folder, in a checkout, an editable install
or after ``pip install .``.
"""

from __future__ import annotations

import os
import tempfile
from importlib import resources
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import Message

from data_prep.core.checks import read_text
from data_prep.core.errors import UserError
from deadnet_caffe.caffe_env import check_net_builds, import_caffe
from deadnet_caffe.checks import check_net_param, check_solver_param, check_weights


def published(name: str) -> Path:
    """The shipped prototxt ``name``, e.g. ``"deploy.prototxt"`` or
    ``"dataset_a/solver.prototxt"`` (a file on disk: Caffe reads paths, so the package must be
    installed unzipped, as pip does)."""
    return Path(str(resources.files("deadnet_caffe").joinpath("prototxt", *name.split("/"))))


def _pb2():
    import_caffe()
    from caffe.proto import caffe_pb2

    return caffe_pb2


def _parse(path: Path | str, message: Message, what: str) -> Message:
    text = read_text(path, what)
    try:
        text_format.Merge(text, message)
    except text_format.ParseError as err:
        raise UserError(f"{path}: not a valid Caffe {what} ({err}).") from None
    return message


def load_net_param(path: Path | str):
    """Parse a net prototxt into a ``caffe_pb2.NetParameter`` and check it before Caffe sees
    it (:func:`deadnet_caffe.checks.check_net_param`: layer types, bottom blobs, sizes).

    Raises
    ------
    UserError
        If the file cannot be read, is not UTF-8 text or a valid NetParameter in text
        format, or fails the checks.
    """
    param = _parse(path, _pb2().NetParameter(), "net prototxt")
    check_net_param(param, path)
    return param


def load_solver_param(path: Path | str):
    """Parse a solver prototxt into a ``caffe_pb2.SolverParameter`` and check its numbers
    (:func:`deadnet_caffe.checks.check_solver_param`; see :func:`load_net_param`)."""
    param = _parse(path, _pb2().SolverParameter(), "solver prototxt")
    check_solver_param(param, path)
    return param


def save_param(param: Message, path: Path | str) -> Path:
    """Write a NetParameter or SolverParameter as text, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text_format.MessageToString(param))
    os.replace(tmp, path)
    return path


def net_from_param(
    net_param, phase: str = "TEST", weights: Path | str | None = None, name: str | None = None
):
    """Instantiate a ``caffe.Net`` from an in-memory NetParameter.

    pycaffe only builds nets from files, so the parameter is written to a temporary file
    first. ``phase`` is ``"TRAIN"`` or ``"TEST"``; ``weights`` (a .caffemodel) is checked
    with :func:`check_weights` before Caffe sees it. ``name`` (e.g. the prototxt the
    parameter came from) names the net in error messages instead of the temporary file.
    """
    with tempfile.TemporaryDirectory(prefix="deadnet-net-") as tmp:
        path = save_param(net_param, Path(tmp) / "net.prototxt")
        return load_net(path, phase, weights, name)


def load_net(
    prototxt: Path | str,
    phase: str = "TEST",
    weights: Path | str | None = None,
    name: str | None = None,
):
    """``caffe.Net(prototxt, [weights,] phase)`` with readable errors instead of glog aborts.

    The net is first built in an isolated child (:func:`~deadnet_caffe.caffe_env.
    check_net_builds`), so that a Caffe CHECK failure is a sentence naming ``name`` (default:
    the prototxt), not an abort of this process.

    Raises
    ------
    UserError
        If a file is missing, Caffe cannot build the net, or the weights do not fit the net
        (see :func:`check_weights`).
    """
    caffe = import_caffe()
    prototxt = Path(prototxt)
    load_net_param(prototxt)  # a parse error here is a sentence; inside Caffe it is an abort
    check_net_builds(prototxt, phase, name)  # any other CHECK abort happens in a child
    ph = {"TRAIN": caffe.TRAIN, "TEST": caffe.TEST}[phase]
    if weights is None:
        return caffe.Net(str(prototxt), ph)
    check_weights(prototxt, weights, phase)
    return caffe.Net(str(prototxt), str(weights), ph)
