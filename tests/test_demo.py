"""The reduced demo end to end (issue: make demo, item 7): tiny preset, a few iterations.

Every step runs for real (simulator, Data Set A LMDBs, Caffe training of the published net,
evaluation, heat maps, Grad-CAM, class models, report); the assertions check that the pieces
fit: the summary has the figures the demo promises, the results page links files that exist,
and a rerun reuses every step.
"""

from __future__ import annotations

import json
import re

import pytest

from deadnet_caffe.cli import main

pytestmark = pytest.mark.slow

ARGS = [
    "--preset", "tiny", "--max-iter", "2", "--test-interval", "2", "--report-every", "5",
    "--classmodel-iterations", "3", "--gradcam-per-class", "4",
]  # fmt: skip


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    assert main(["demo", "--out", str(out), *ARGS]) == 0
    return out


def test_summary_has_the_promised_figures(demo_dir):
    s = json.loads((demo_dir / "summary.json").read_text())
    for key in ("test_accuracy", "ci_low", "ci_high", "heatmap_auroc"):
        assert isinstance(s[key], float), key
    assert 0.0 <= s["ci_low"] <= s["test_accuracy"] <= s["ci_high"] <= 1.0
    assert 0.0 <= s["heatmap_auroc"] <= 1.0
    assert set(s["step_seconds"]) == {
        "simulate", "dataset", "train", "bnstats", "evaluate", "heatmap", "gradcam", "classmodel",
        "report",
    }  # fmt: skip
    assert s["solver"]["changes"]["max_iter"][1] == 2
    assert (demo_dir / "train" / "latest.caffemodel").exists()


def test_index_links_only_existing_files(demo_dir):
    page = (demo_dir / "index.html").read_text()
    links = re.findall(r'(?:src|href)="([^"]+)"', page) + re.findall(r"href='([^']+)'", page)
    assert len(links) >= 10
    missing = [link for link in links if not (demo_dir / link).exists()]
    assert not missing


def test_rerun_reuses_every_step(demo_dir, capsys):
    assert main(["demo", "--out", str(demo_dir), *ARGS]) == 0
    s = json.loads((demo_dir / "summary.json").read_text())
    assert sorted(s["steps_reused"]) == sorted(s["step_seconds"])
    assert s["total_seconds"] < 60
