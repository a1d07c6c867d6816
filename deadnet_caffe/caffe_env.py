"""Importing pycaffe and choosing the device, with clear errors instead of glog aborts."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

from data_prep.core.errors import UserError
from data_prep.core.outdir import die_with_parent

#: A glog fatal line: ``F1201 03:04:05.678 123 file.cpp:81] Check failed: ...``.
_FATAL_RE = re.compile(r"^F\d{4,8} [\d:.]+\s+\d+ \S+\] (.*)$")
#: A CHECK's expression before its message: ``Check failed: a == b (0 vs. 1) message``.
_CHECK_RE = re.compile(r"^Check failed: .*? \(\S+ vs\. \S+\) (\S.*)$")

# Caffe logs every net it builds at INFO level; keep the console for our own progress.
os.environ.setdefault("GLOG_minloglevel", "2")
# The project's OpenMP layer patches (third_party/caffe/patches/0002, 0003): idle OpenMP
# workers spin by default, which on a machine with more jobs than cores made two threads
# 4x slower than one (docs/cpu-speed.md). Passive waiting costs nothing on an idle machine.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
# MKL, the default CPU BLAS (third_party/caffe/build.sh): bit-identical results from run to
# run whatever the arrays' alignment, so that a resumed training run repeats an uninterrupted
# one. Patch 0004 sets the same default on `import caffe`; this also covers the caffe tool
# when it is started before pycaffe was imported.
os.environ.setdefault("MKL_CBWR", "AUTO")


def import_caffe():
    """Import pycaffe, or raise a UserError that says how to get it (``make setup``)."""
    try:
        import caffe
    except ImportError as err:
        raise UserError(
            f"pycaffe is not importable in {sys.prefix} ({err}); run 'make setup' first."
        ) from None
    return caffe


def child_limits() -> None:
    """``preexec_fn`` of children that may abort: no core file, and die with the parent."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    die_with_parent()


def run_isolated(code: str, *args: str, timeout: float = 600) -> tuple[int, str]:
    """Run Python ``code`` (with ``args`` as ``sys.argv[1:]``) in a child process.

    The child may hit a glog CHECK and abort: it has ``RLIMIT_CORE`` 0 (no core file), dies
    with this process, and its output is captured, never shown.

    Returns
    -------
    returncode : int
        Negative for a signal (-6 for an abort, -7 for SIGBUS); -9 for a timeout.
    reason : str
        The child's last fatal line (glog ``F`` line or Python exception), else its last line.
    """
    env = dict(os.environ, GLOG_minloglevel="2", GLOG_logtostderr="1")
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            errors="replace",
            env=env,
            timeout=timeout,
            preexec_fn=child_limits,
        )
    except subprocess.TimeoutExpired:
        return -9, f"no answer within {timeout:.0f} s"
    lines = [ln.strip() for ln in (out.stderr + out.stdout).splitlines() if ln.strip()]
    fatal = [m.group(1) for ln in lines if (m := _FATAL_RE.match(ln))]
    reason = fatal[0] if fatal else (lines[-1] if lines else "")
    reason = reason.split(" (known types:")[0]
    if m := _CHECK_RE.match(reason):
        reason = m.group(1)
    if out.returncode < 0 and not fatal:
        reason = f"killed by {signal.Signals(-out.returncode).name}"
    return out.returncode, reason[:300]


def gpu_available(device: int = 0) -> bool:
    """Whether CUDA device ``device`` can be used, asked in an isolated child process.

    ``caffe.set_device`` / ``set_mode_gpu`` on a machine without a usable GPU, or in a
    CPU_ONLY build, kills the process with a glog CHECK failure rather than raising, so the
    question is asked where that cannot hurt us (:func:`run_isolated`: no core file).
    """
    code = f"import caffe; caffe.set_device({int(device)}); caffe.set_mode_gpu(); print('ok')"
    rc, reason = run_isolated(code, timeout=120)
    return rc == 0 and reason.endswith("ok")


def check_gpu(gpu: str | int) -> None:
    """Refuse ``--gpu GPU`` (a device number, or ``all`` for device 0 and the rest) unless the
    device can be used. The one place every command asks this.

    Raises
    ------
    UserError
        Naming ``--gpu``, if this Caffe build or machine has no such GPU.
    """
    device = 0 if gpu == "all" else int(gpu)
    if not gpu_available(device):
        raise UserError(
            f"--gpu {gpu} was asked for, but CUDA device {device} cannot be used here (a "
            "CPU-only Caffe build has none; a CUDA build needs the device and its driver); "
            "drop --gpu to run on the CPU."
        )


_NET_PROBE = (
    "import sys, caffe; caffe.set_mode_cpu(); "
    "caffe.Net(sys.argv[1], {'TRAIN': caffe.TRAIN, 'TEST': caffe.TEST}[sys.argv[2]]); print('ok')"
)
#: Layer types whose construction reads files (a data source), so that a net built once may
#: still abort later: nets with them are built in a child every time.
_READS_FILES = frozenset({"Data", "HDF5Data", "ImageData", "WindowData", "Python"})
_NETS_BUILT: set[str] = set()


def _net_key(prototxt: Path, phase: str, name: str | None) -> tuple[str, bool]:
    """A digest of the net for this Caffe build, and whether the net reads files.

    The digest covers the parsed NetParameter without ``force_backward`` (which changes no
    check at construction), the phase and the Caffe library in use.
    """
    try:
        text = prototxt.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{name or prototxt}: cannot read the net ({err}).") from None
    from google.protobuf import text_format

    caffe = import_caffe()
    param = caffe.proto.caffe_pb2.NetParameter()
    try:
        text_format.Merge(text, param)
    except text_format.ParseError:
        return hashlib.sha256(text.encode()).hexdigest(), True
    param.ClearField("force_backward")
    h = hashlib.sha256(param.SerializeToString(deterministic=True))
    h.update(f"{phase} {Path(caffe.__file__).resolve()}".encode())
    reads = any(layer.type in _READS_FILES for layer in param.layer) or bool(param.layers)
    return h.hexdigest(), reads


def _built_dir() -> Path:
    """Where nets that Caffe built without aborting are remembered across processes."""
    root = os.environ.get("DEADNET_CACHE") or Path.home() / ".cache" / "deadnet-caffe"
    return Path(root) / "nets-built"


def check_net_builds(prototxt: Path | str, phase: str = "TEST", name: str | None = None) -> None:
    """Build the net of ``prototxt`` once in an isolated child before this process does.

    Caffe aborts the whole process (glog CHECK) on an unknown layer type, an unknown bottom
    blob, a zero-sized or impossible shape, an unreadable Data source and more; here such a
    net becomes one sentence, naming ``name`` (default: ``prototxt``). A net that built
    before with this Caffe build is not built again: in this process, and, for nets that
    read no files (deploy nets), in any later one (an empty file per net under
    ``~/.cache/deadnet-caffe/nets-built``, or ``$DEADNET_CACHE``).

    Raises
    ------
    UserError
        Naming ``prototxt`` and Caffe's reason.
    """
    prototxt = Path(prototxt)
    key, reads = _net_key(prototxt, phase, name)
    remembered = _built_dir() / key
    if key in _NETS_BUILT or (not reads and remembered.is_file()):
        return
    rc, reason = run_isolated(_NET_PROBE, str(prototxt), phase)
    if rc != 0 or not reason.endswith("ok"):
        raise UserError(f"{name or prototxt}: Caffe cannot build this net ({reason.rstrip('.')}).")
    _NETS_BUILT.add(key)
    if not reads:
        with contextlib.suppress(OSError):
            remembered.parent.mkdir(parents=True, exist_ok=True)
            remembered.touch()


def set_device(gpu: int | None):
    """Select CPU (``gpu=None``) or GPU ``gpu``; return the caffe module.

    Raises
    ------
    UserError
        If a GPU is asked for but this Caffe build or machine has none.
    """
    caffe = import_caffe()
    if gpu is None:
        caffe.set_mode_cpu()
        return caffe
    check_gpu(gpu)
    caffe.set_device(gpu)
    caffe.set_mode_gpu()
    return caffe
