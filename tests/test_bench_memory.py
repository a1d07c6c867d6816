"""The data-set benchmark's peak memory is the measured process's own (benchmarks/dataset.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

_CHILD = """
import numpy as np
from deadnet_caffe.benchmarks.dataset import own_peak_rss_kb
a = np.ones(25_000_000)  # 200 MB, touched
print(own_peak_rss_kb())
"""


def test_own_peak_rss_counts_the_child_not_its_parent():
    parent = np.ones(100_000_000)  # 800 MB resident here while the child runs
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True
    ).stdout
    kb = int(out)
    assert 200_000 < kb < 600_000  # its 200 MB and the interpreter, not this process's 800 MB
    assert parent[-1] == 1.0
