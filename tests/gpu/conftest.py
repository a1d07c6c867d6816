"""The GPU smoke tests run only where Caffe can use a CUDA device (``make test-gpu``).

Without one they are skipped, cheaply: no NVIDIA device node means no child process is
started, so ``make test`` on a GPU-less machine does not slow down. ``make test-gpu`` sets
DEADNET_REQUIRE_GPU=1, which turns the skip into a failure, so that a GPU host whose image
or build cannot reach its GPU does not pass by skipping. DEADNET_GPU picks the device (0).
"""

from __future__ import annotations

import glob
import os

import pytest


def _unusable(device: int) -> str | None:
    """Why Caffe cannot use CUDA device ``device`` here, or None when it can."""
    if not glob.glob("/dev/nvidia[0-9]*"):
        return "no NVIDIA device node (/dev/nvidia0, ...) is visible"
    from deadnet_caffe.caffe_env import gpu_available

    if not gpu_available(device):
        return f"Caffe cannot use GPU {device} (a CPU_ONLY build, or the driver refused it)"
    return None


@pytest.fixture(scope="session")
def gpu() -> int:
    """The CUDA device the tests use; skips (fails under DEADNET_REQUIRE_GPU=1) without one."""
    device = int(os.environ.get("DEADNET_GPU", "0"))
    reason = _unusable(device)
    if reason is not None:
        if os.environ.get("DEADNET_REQUIRE_GPU") == "1":
            pytest.fail(f"make test-gpu needs a GPU: {reason}", pytrace=False)
        pytest.skip(reason)
    return device
