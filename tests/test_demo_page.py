"""The results pages' Figure 3 inset table and Data Set B targets (deadnet_caffe/demo_page.py)."""

from __future__ import annotations

import json

import pytest

from data_prep.core import paper
from deadnet_caffe.demo_page import TARGETS_B, _figure3_html, figure3_table, targets_b


def test_targets_b_says_met_and_by_how_much():
    s = {"test_accuracy": 0.72, "ceiling": 0.81, "heatmap_auroc_any_damage": 0.9,
         "heatmap_auroc_per_position": 0.7, "gradcam_pointing": None}  # fmt: skip
    t = targets_b(s)
    assert set(t) == set(TARGETS_B)
    assert t["test_accuracy"] == {"target": 0.70, "ours": 0.72, "met": True}
    assert t["ceiling_gap"]["ours"] == pytest.approx(0.09) and t["ceiling_gap"]["met"] is False
    assert t["heatmap_auroc_per_position"]["met"] is False
    assert t["gradcam_pointing"]["met"] is None


def test_figure3_table_reads_the_paper_and_the_sibling_demo(tmp_path):
    (tmp_path / "demo").mkdir()
    a = {"test_accuracy": 0.95, "ci_low": 0.93, "ci_high": 0.97, "unexposed_net_healthy": 0.9}
    (tmp_path / "demo" / "summary.json").write_text(json.dumps(a))
    b = {"test_accuracy": 0.71, "ci_low": 0.69, "ci_high": 0.73, "ceiling": 0.767}
    table = figure3_table(tmp_path / "demo-b", b, "B")
    assert table["A"]["ours"] == a and table["B"]["ours"] == b
    assert table["A"]["paper"]["accuracy"] == paper.PAPER_ACCURACY_A == 0.945
    pb = table["B"]["paper"]
    assert (pb["accuracy"], pb["accuracy_figure3"]) == (0.757, 0.752)
    assert round(pb["ceiling"], 3) == 0.771 and round(pb["disagreement"], 3) == 0.186
    assert round(pb["unexposed_experts_healthy"], 3) == 0.898
    assert pb["unexposed_net_healthy"] == 0.888
    page = _figure3_html(table)
    for text in ("94.5%", "75.7%", "75.2%", "77.1%", "89.8%", "88.8%", "95.0%", "71.0%", "76.7%"):
        assert text in page, text
    alone = figure3_table(tmp_path / "elsewhere" / "demo-b", b, "B")
    assert alone["A"]["ours"] == {} and "not run" in _figure3_html(alone)
