"""Importing pycaffe and choosing the device, with clear errors instead of glog aborts."""

from __future__ import annotations

import os
import subprocess
import sys

from deadnet_caffe.errors import UserError

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


def gpu_available(device: int = 0) -> bool:
    """Whether CUDA device ``device`` can be used, asked in a child process.

    ``caffe.set_device`` / ``set_mode_gpu`` on a machine without a usable GPU, or in a
    CPU_ONLY build, kills the process with a glog CHECK failure rather than raising, so the
    question is asked where that cannot hurt us.
    """
    code = f"import caffe; caffe.set_device({int(device)}); caffe.set_mode_gpu(); print('ok')"
    env = dict(os.environ, GLOG_minloglevel="3")
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip().endswith("ok")


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
    if not gpu_available(gpu):
        raise UserError(
            f"--gpu {gpu} was asked for, but this Caffe build or machine has no such GPU "
            "(CPU_ONLY builds never do); drop --gpu to run on the CPU."
        )
    caffe.set_device(gpu)
    caffe.set_mode_gpu()
    return caffe
