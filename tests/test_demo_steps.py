"""The demo's step cache (deadnet_caffe.demo.run_step): reuse, and a changed command line."""

from __future__ import annotations

import json

from deadnet_caffe.demo import STAMP, Step, run_step
from deadnet_caffe.netspec import published


def test_a_changed_command_line_remakes_the_step_and_a_same_one_reuses_it(tmp_path):
    out = tmp_path / "step"
    out.mkdir()
    (out / "old-output.txt").write_text("made by an earlier command line\n")
    (out / STAMP).write_text(json.dumps({"argv": ["describe", "other"], "seconds": 1.0}))
    argv = ["describe", str(published("deploy.prototxt"))]
    lines: list[str] = []

    first = run_step(Step("describe", "a net's table", out, argv), lines.append)
    assert first["cached"] is False and first["argv"] == argv
    assert not (out / "old-output.txt").exists()  # the earlier output went
    assert json.loads((out / STAMP).read_text())["argv"] == argv
    assert any("the command line or an input changed" in line for line in lines)

    again = run_step(Step("describe", "a net's table", out, argv), lines.append)
    assert again["cached"] is True and again["seconds"] == first["seconds"]
    assert lines[-1].startswith("[demo] describe: reusing")

    # after an earlier step ran again, the same command line is not enough to reuse it
    forced = run_step(Step("describe", "a net's table", out, argv), lines.append, reuse=False)
    assert forced["cached"] is False
    assert any("an input changed" in line for line in lines[-3:])
