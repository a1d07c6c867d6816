"""Bad input across every command: one table of cases, one set of assertions.

Each case runs the real ``deadnet`` command line in a child process, in a fresh folder that
holds a copy of the fixtures below, after the case's ``prepare`` has made its bad input
there. It asserts what ../shared/DESIGN.md promises for bad input:

- exit status 2;
- one line on stderr, naming the file or option (``names``);
- no traceback;
- no core file (the child runs with RLIMIT_CORE unlimited, so an abort would leave one);
- the ``--out`` location (``out``) exactly as it was before: the same files, the same bytes.

Adding a case is one line in ``CASES``. Paths in ``argv`` are relative to the case folder.

Fixtures in every case folder:

- ``exp/``: a raw experiment of seven 384 x 640 positions, 12 frames each
  (tests/data_experiment.py), with ``manifest.csv``;
- ``net/deploy.prototxt`` and ``net/weights.caffemodel``: a narrow DeadNet-shaped deploy net
  with filler weights (tests/infer_nets.py);
- ``img/a.tif``: one 300 x 300 16-bit image;
- ``keep/``: a folder of unrelated files (``notes.txt``, ``data/table.csv``).
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bad_files as bf
import cv2
import numpy as np
import pytest
import tifffile
from data_experiment import make_experiment
from infer_nets import phase_like, write_net

from data_prep.core.outdir import write_marker

DEADNET = Path(sys.executable).with_name("deadnet")
NET = "--model net/deploy.prototxt --weights net/weights.caffemodel"


@dataclass(frozen=True)
class Case:
    """One bad input: the command line, what its sentence must name, how to make the input.

    ``argv`` is split on spaces; ``prepare`` (optional) changes the case folder before the
    run; ``out`` is the path whose files and bytes must be unchanged afterwards (``None``: no
    output location in this case); ``needs_non_root`` cases (file permissions) are skipped
    when the tests run as root, whom permissions do not stop.
    """

    id: str
    argv: str
    names: str
    prepare: Callable[[Path], None] | None = None
    out: str | None = None
    needs_non_root: bool = False


def _write(rel: str, data: bytes | str) -> Callable[[Path], None]:
    """A ``prepare`` that writes ``data`` to ``rel`` (parents made)."""

    def prepare(d: Path) -> None:
        path = d / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)

    return prepare


def _symlink(rel: str, target: str) -> Callable[[Path], None]:
    """A ``prepare`` that makes ``rel`` a symbolic link to ``target``."""
    return lambda d: (d / rel).symlink_to(target)


def _read_only(rel: str) -> Callable[[Path], None]:
    """A ``prepare`` that makes an empty read-only folder ``rel``."""

    def prepare(d: Path) -> None:
        (d / rel).mkdir()
        (d / rel).chmod(0o555)

    return prepare


def _marked(rel: str, command: str, files: list[str], extra: str | None = None):
    """A ``prepare`` that makes ``rel`` look like ``command``'s output holding ``files``
    (plus an unlisted file ``extra``)."""

    def prepare(d: Path) -> None:
        for f in [*files, *([extra] if extra else [])]:
            (d / rel / f).parent.mkdir(parents=True, exist_ok=True)
            (d / rel / f).write_text("x\n")
        write_marker(d / rel, command, "complete", files)

    return prepare


def _zoo(rel: str, sha1: str | None = None, flip: bool = False) -> Callable[[Path], None]:
    """A ``prepare`` that makes ``rel`` a Model Zoo folder of the fixture net (readme.md
    with ``sha1``, default the weights' own), with one byte of its caffemodel flipped."""

    def prepare(d: Path) -> None:
        (d / rel).mkdir()
        shutil.copy(d / "net" / "deploy.prototxt", d / rel / "deploy.prototxt")
        data = bytearray((d / "net" / "weights.caffemodel").read_bytes())
        digest = sha1 or hashlib.sha1(data).hexdigest()
        if flip:
            data[len(data) // 2] ^= 0xFF
        (d / rel / "w.caffemodel").write_bytes(bytes(data))
        (d / rel / "readme.md").write_text(
            f"---\nname: m\ncaffemodel: w.caffemodel\nsha1: {digest}\n---\n# m\n"
        )

    return prepare


_INPUT = (
    'name: "bad"\nlayer { name: "data" type: "Input" top: "data"\n'
    "  input_param { shape { dim: 1 dim: 1 dim: 16 dim: 16 } } }\n"
)

CASES = [
    # ---- missing inputs ----------------------------------------------------------------
    Case("classify-missing-image", f"classify {NET} --out o nothere.tif", "nothere.tif"),
    Case("heatmap-missing-weights",
         "heatmap --model net/deploy.prototxt --weights nothere.caffemodel --out o img/a.tif",
         "nothere.caffemodel"),
    # ---- output locations (--out, --run, --db) -------------------------------------------
    Case("classify-out-unrelated-folder", f"classify {NET} --out keep img/a.tif", "keep",
         out="keep"),
    Case("classify-out-is-input-folder", f"classify {NET} --out img img", "img", out="img"),
    Case("classify-out-contains-input", f"classify {NET} --out img img/a.tif", "img", out="img"),
    Case("classify-out-inside-input", f"classify {NET} --out img/o img", "img/o", out="img"),
    Case("classify-out-contains-weights", f"classify {NET} --out net img/a.tif", "net",
         out="net"),
    Case("classify-out-is-a-file", f"classify {NET} --out keep/notes.txt img/a.tif",
         "keep/notes.txt", out="keep"),
    Case("classify-out-under-a-file", f"classify {NET} --out keep/notes.txt/o img/a.tif",
         "keep/notes.txt/o", out="keep"),
    Case("classify-out-dot", f"classify {NET} --out . img/a.tif", "--out .", out="."),
    Case("classify-out-parent", f"classify {NET} --out .. img/a.tif", "--out .."),
    Case("classify-out-symlink", f"classify {NET} --out link img/a.tif", "link",
         _symlink("link", "keep"), out="keep"),
    Case("classify-out-read-only-fs", f"classify {NET} --out /sys/deadnet-o img/a.tif",
         "/sys/deadnet-o"),
    Case("classify-out-read-only-folder", f"classify {NET} --out ro/o img/a.tif", "ro/o",
         _read_only("ro"), out="ro", needs_non_root=True),
    Case("classify-out-of-another-command", f"classify {NET} --out o img/a.tif", "o",
         _marked("o", "dataset", ["train.lmdb/data.mdb"]), out="o"),
    Case("classify-out-own-with-user-file", f"classify {NET} --out o img/a.tif", "o",
         _marked("o", "classify", ["images.csv"], extra="my-notes.txt"), out="o"),
    Case("heatmap-out-is-experiment", f"heatmap {NET} --experiment exp --out exp", "exp",
         out="exp"),
    Case("report-out-inside-experiment", f"report {NET} --experiment exp --out exp/report",
         "exp/report", out="exp"),
    Case("dataset-out-is-experiment", "dataset A --experiment exp --out exp", "exp", out="exp"),
    Case("dataset-out-unrelated-folder", "dataset A --experiment exp --out keep", "keep",
         out="keep"),
    Case("simulate-out-unrelated-folder", "simulate --preset tiny --out keep", "keep",
         out="keep"),
    Case("simulate-out-is-a-file", "simulate --preset tiny --out keep/notes.txt",
         "keep/notes.txt", out="keep"),
    Case("gradcam-out-contains-weights", f"gradcam {NET} --dataset exp --out net", "net",
         out="net"),
    Case("classmodel-out-unrelated-folder", f"classmodel {NET} --out keep", "keep", out="keep"),
    Case("evaluate-out-contains-weights",
         "evaluate --weights net/weights.caffemodel --dataset exp --net net/deploy.prototxt "
         "--out net", "net", out="net"),
    Case("demo-out-unrelated-folder", "demo --preset tiny --out keep", "keep", out="keep"),
    Case("bench-out-unrelated-folder", "bench --quick --only simulate --out keep", "keep",
         out="keep"),
    Case("train-run-is-a-file", "train --dataset exp --solver net/deploy.prototxt "
         "--run keep/notes.txt", "keep/notes.txt", out="keep"),
    Case("train-run-unrelated-folder", "train --dataset exp --solver net/deploy.prototxt "
         "--run keep", "keep", out="keep"),
    Case("train-run-is-dataset", "train --dataset exp --solver net/deploy.prototxt --run exp",
         "exp", out="exp"),
    Case("annotate-export-into-folder", "annotate export --db votes.sqlite --out keep",
         "keep", _write("votes.sqlite", b""), out="keep"),
    Case("annotate-export-over-a-file", "annotate export --db votes.sqlite --out keep/notes.txt",
         "keep/notes.txt", _write("votes.sqlite", b""), out="keep"),
    Case("annotate-db-not-a-database", "annotate export --db keep/notes.txt --out v.csv",
         "keep/notes.txt", out="keep"),
    Case("annotate-add-db-not-a-database", "annotate add-annotator ann --db keep/notes.txt",
         "keep/notes.txt", out="keep"),
    Case("annotate-db-is-a-folder", "annotate export --db keep --out v.csv", "keep",
         out="keep"),
    # ---- Caffe aborts become sentences (isolated children, no core file) -----------------
    Case("train-gpu-without-gpu", "train --dataset exp --solver net/deploy.prototxt --run r "
         "--gpu 0", "--gpu 0", out="r"),
    Case("heatmap-gpu-without-gpu", f"heatmap {NET} --gpu 0 --out o img/a.tif", "--gpu 0",
         out="o"),
    Case("gradcam-gpu-without-gpu", f"gradcam {NET} --gpu 0 --dataset exp --out o", "--gpu 0",
         out="o"),
    Case("describe-unknown-layer-type", "describe bad.prototxt", "bad.prototxt",
         _write("bad.prototxt", _INPUT + 'layer { name: "x" type: "NoSuchLayer" bottom: "data" '
                'top: "x" }\n')),
    Case("describe-unknown-bottom", "describe bad.prototxt", "bad.prototxt",
         _write("bad.prototxt", _INPUT + 'layer { name: "r" type: "ReLU" bottom: "nowhere" '
                'top: "r" }\n')),
    Case("classify-unknown-layer-type",
         "classify --model bad.prototxt --weights net/weights.caffemodel --out o img/a.tif",
         "bad.prototxt",
         _write("bad.prototxt", _INPUT + 'layer { name: "x" type: "NoSuchLayer" bottom: "data" '
                'top: "x" }\n'), out="o"),
    Case("classify-unknown-bottom",
         "classify --model bad.prototxt --weights net/weights.caffemodel --out o img/a.tif",
         "bad.prototxt",
         _write("bad.prototxt", _INPUT + 'layer { name: "r" type: "ReLU" bottom: "nowhere" '
                'top: "r" }\n'), out="o"),
    Case("describe-size-too-small", "describe net/deploy.prototxt --size 4 4", "--size 4 4"),
    # ---- images and TIFFs -----------------------------------------------------------------
    Case("classify-corrupt-first-ifd", f"classify {NET} --out o img/bad.tif", "img/bad.tif",
         bf.at("img/bad.tif", bf.corrupt_first_ifd), "o"),
    Case("heatmap-corrupt-first-ifd", f"heatmap {NET} --out o img/bad.tif", "img/bad.tif",
         bf.at("img/bad.tif", bf.corrupt_first_ifd), "o"),
    Case("report-first-ifd-past-end", f"report --experiment exp {NET} --out o",
         "exp/w6_p1.tif", bf.at("exp/w6_p1.tif", bf.first_ifd_past_end), "o"),
    Case("classify-header-200000px", f"classify {NET} --out o img/huge.tif", "img/huge.tif",
         bf.at("img/huge.tif", bf.huge_header), "o"),
    Case("heatmap-header-200000px", f"heatmap {NET} --out o img/huge.tif", "img/huge.tif",
         bf.at("img/huge.tif", bf.huge_header), "o"),
    Case("gradcam-frame-header-200000px",
         f"gradcam --dataset ds {NET} --out o --frame img/huge.tif", "img/huge.tif",
         bf.at("img/huge.tif", bf.huge_header), "o"),
    Case("classify-nan-pixel", f"classify {NET} --out o img/nan.tif", "img/nan.tif",
         bf.at("img/nan.tif", bf.float_stack, float("nan")), "o"),
    Case("heatmap-inf-pixel", f"heatmap {NET} --out o img/inf.tif", "img/inf.tif",
         bf.at("img/inf.tif", bf.float_stack, float("inf")), "o"),
    Case("report-nan-pixel", f"report --experiment exp {NET} --out o", "exp/w3_p1.tif",
         bf.replace_position("w3_p1.tif", bf.float_stack, float("nan")), "o"),
    Case("gradcam-images-inf-pixel",
         f"gradcam --dataset ds {NET} --out o --images img/a.tif img/inf.tif", "img/inf.tif",
         bf.at("img/inf.tif", bf.float_stack, -float("inf")), "o"),
    Case("classify-truncated-imagej-stack", f"classify {NET} --out o img/t.tif", "img/t.tif",
         bf.at("img/t.tif", bf.truncated_stack), "o"),
    Case("classify-truncated-plain-stack", f"classify {NET} --out o img/t.tif", "img/t.tif",
         bf.at("img/t.tif", bf.truncated_stack, imagej=False), "o"),
    Case("heatmap-truncated-position", f"heatmap --experiment exp {NET} --out o",
         "exp/w1_p1.tif", bf.replace_position("w1_p1.tif", bf.truncated_stack), "o"),
    Case("report-truncated-position", f"report --experiment exp {NET} --out o",
         "exp/w5_p1.tif", bf.replace_position("w5_p1.tif", bf.truncated_stack, imagej=False),
         "o"),
    Case("dataset-truncated-position", "dataset A --experiment exp --out o", "exp/w0_p1.tif",
         bf.replace_position("w0_p1.tif", bf.truncated_stack), "o"),
    Case("classify-constant-image", f"classify {NET} --out o img/c.tif", "img/c.tif",
         bf.at("img/c.tif", bf.constant_frame, frames=1), "o"),
    Case("heatmap-constant-frame", f"heatmap {NET} --out o img/c.tif", "img/c.tif",
         bf.at("img/c.tif", bf.constant_frame, which=2), "o"),
    Case("report-constant-frame", f"report --experiment exp {NET} --out o", "exp/w2_p1.tif",
         bf.replace_position("w2_p1.tif", bf.constant_frame, which=5), "o"),
    Case("dataset-constant-frame", "dataset A --experiment exp --out o", "exp/w4_p1.tif",
         bf.replace_position("w4_p1.tif", bf.constant_frame, which=0), "o"),
    Case("classmodel-init-image-constant",
         f"classmodel {NET} --out o --init-image img/a.tif img/c.tif", "img/c.tif",
         bf.at("img/c.tif", bf.constant_frame, frames=1), "o"),
    Case("classify-truncated-jpeg", f"classify {NET} --out o img/t.jpg", "img/t.jpg",
         bf.at("img/t.jpg", bf.truncated_jpeg), "o"),
    Case("heatmap-truncated-png", f"heatmap {NET} --out o img/t.png", "img/t.png",
         bf.at("img/t.png", lambda p: bf.truncate(p) if cv2.imwrite(
             str(p), bf.texture((300, 300))) else None), "o"),
    Case("classify-garbage-png", f"classify {NET} --out o img/g.png", "img/g.png",
         bf.at("img/g.png", bf.garbage), "o"),
    # ---- weights, prototxts, LMDBs ---------------------------------------------------------
    Case("classify-caffemodel-cut-before-fc1",
         "classify --model net/deploy.prototxt --weights net/cut.caffemodel --out o img/a.tif",
         "fc1", bf.cut_caffemodel("fc1"), "o"),
    Case("heatmap-caffemodel-cut-before-score",
         "heatmap --model net/deploy.prototxt --weights net/cut.caffemodel --out o img/a.tif",
         "net/cut.caffemodel", bf.cut_caffemodel("score"), "o"),
    Case("gradcam-caffemodel-garbage",
         "gradcam --dataset ds --model net/deploy.prototxt --weights net/g.caffemodel --out o",
         "net/g.caffemodel", bf.at("net/g.caffemodel", bf.garbage), "o"),
    Case("classmodel-caffemodel-truncated-bytes",
         "classmodel --model net/deploy.prototxt --weights net/weights.caffemodel --out o",
         "net/weights.caffemodel", bf.at("net/weights.caffemodel", bf.truncate, 0.6), "o"),
    Case("evaluate-caffemodel-cut-before-fc1",
         "evaluate --weights tiny/cut.caffemodel --dataset ds --net tiny/train_val.prototxt "
         "--out o", "tiny/cut.caffemodel", bf.damaged("cut-weights"), "o"),
    Case("classify-prototxt-unknown-type",
         "classify --model net/m.prototxt --weights net/weights.caffemodel --out o img/a.tif",
         "net/m.prototxt",
         bf.edited_text("net/deploy.prototxt", "net/m.prototxt", '"Pooling"', '"Pooling2D"'),
         "o"),
    Case("heatmap-prototxt-unknown-bottom",
         "heatmap --model net/m.prototxt --weights net/weights.caffemodel --out o img/a.tif",
         "conv_d1_x", bf.edited_text("net/deploy.prototxt", "net/m.prototxt",
                                     'bottom: "conv_d1_1"', 'bottom: "conv_d1_x"'), "o"),
    Case("describe-prototxt-unknown-bottom", "describe net/m.prototxt", "net/m.prototxt",
         bf.edited_text("net/deploy.prototxt", "net/m.prototxt", 'bottom: "pool_d2_0"',
                        'bottom: "pool_d9_0"')),
    Case("describe-prototxt-zero-outputs", "describe net/m.prototxt", "net/m.prototxt",
         bf.edited_text("net/deploy.prototxt", "net/m.prototxt", "num_output: 16",
                        "num_output: 0")),
    Case("describe-binary-file", "describe net/weights.caffemodel", "net/weights.caffemodel"),
    Case("describe-latin1-prototxt", "describe net/m.prototxt", "net/m.prototxt",
         bf.edited_text("net/deploy.prototxt", "net/m.prototxt", 'name: "deadnet_test"',
                        '# Größe\nname: "deadnet_test"', "latin-1")),
    Case("train-prototxt-unknown-type",
         "train --dataset ds --solver tiny/solver.prototxt --run r", "tiny/train_val.prototxt",
         lambda d: (bf.tiny(d), bf.edited_text("tiny/train_val.prototxt",
                    "tiny/train_val.prototxt", '"ReLU"', '"Relu"')(d)), "r"),
    Case("train-solver-base-lr-nan-in-file",
         "train --dataset ds --solver tiny/solver.prototxt --run r", "tiny/solver.prototxt",
         lambda d: (bf.tiny(d), bf.edited_text("tiny/solver.prototxt", "tiny/solver.prototxt",
                                                "base_lr: 0.01", "base_lr: nan")(d)), "r"),
    Case("train-solver-unknown-lr-policy",
         "train --dataset ds --solver tiny/solver.prototxt --run r", "lr_policy",
         lambda d: (bf.tiny(d), bf.edited_text("tiny/solver.prototxt", "tiny/solver.prototxt",
                                                "lr_policy: ", 'lr_policy: "invv" #')(d)), "r"),
    Case("train-lmdb-truncated-data-mdb",
         "train --dataset ds --solver tiny/solver.prototxt --run r", "ds/train.lmdb",
         bf.damaged("truncated-train"), "r"),
    Case("train-lmdb-garbage", "train --dataset ds --solver tiny/solver.prototxt --run r",
         "ds/test.lmdb", bf.damaged("garbage-test"), "r"),
    Case("evaluate-lmdb-truncated-data-mdb",
         "evaluate --weights net/weights.caffemodel --dataset ds --net tiny/train_val.prototxt "
         "--out o", "ds/test.lmdb", lambda d: (bf.tiny(d), bf.truncate(
             d / "ds" / "test.lmdb" / "data.mdb")), "o"),
    Case("evaluate-lmdb-not-datums",
         "evaluate --weights net/weights.caffemodel --dataset ds --net tiny/train_val.prototxt "
         "--out o", "ds/test.lmdb", bf.damaged("not-datum"), "o"),
    Case("evaluate-lmdb-crops-smaller-than-net",
         "evaluate --weights tiny/weights.caffemodel --dataset ds --net tiny/big.prototxt "
         "--out o", "crop_size 32", lambda d: (bf.tiny(d), bf.edited_text(
             "tiny/train_val.prototxt", "tiny/big.prototxt", "crop_size: 12", "crop_size: 32")(d)),
         "o"),
    Case("gradcam-lmdb-truncated-data-mdb", f"gradcam --dataset ds {NET} --out o",
         "ds/train.lmdb", bf.damaged("truncated-train"), "o"),
    Case("classmodel-lmdb-garbage", f"classmodel --dataset ds {NET} --out o", "ds/test.lmdb",
         bf.damaged("garbage-test"), "o"),
    Case("gradcam-lmdb-crops-smaller-than-net", f"gradcam --dataset ds {NET} --out o",
         "ds/train.lmdb", bf.tiny, "o"),
    Case("classmodel-lmdb-crops-smaller-than-net", f"classmodel --dataset ds {NET} --out o",
         "ds/test.lmdb", bf.tiny, "o"),
    Case("train-prototxt-batch-size-0",
         "train --dataset ds --solver tiny/solver.prototxt --run r", "batch_size",
         lambda d: (bf.tiny(d), bf.edited_text("tiny/train_val.prototxt",
                    "tiny/train_val.prototxt", "batch_size: 8", "batch_size: 0")(d)), "r"),
    Case("gradcam-npz-cache-garbage",
         f"gradcam --dataset ds {NET} --cache net/eq3.npz --out o", "net/eq3.npz",
         bf.at("net/eq3.npz", bf.garbage), "o"),
    Case("train-missing-finetune-weights",
         "train --dataset keep --solver keep/notes.txt --run r --weights nothere.caffemodel",
         "nothere.caffemodel", out="r"),
    Case("train-paper-iterations-and-max-iter",
         "train --dataset keep --solver keep/notes.txt --run r --paper-iterations --max-iter 5",
         "--paper-iterations", out="r"),
    Case("report-max-dose-leaves-no-position",
         f"report {NET} --experiment exp --out o --max-dose -1", "--max-dose", out="o"),
    Case("bnstats-dataset-without-split",
         f"bnstats {NET} --experiment exp --dataset keep --out o", "keep/split.csv", out="o"),
    Case("bnstats-out-is-experiment",
         f"bnstats {NET} --experiment exp --dataset ds --out exp", "exp",
         _write("ds/split.csv", b"key,part\nsim/w1/p1,train\n"), out="exp"),
    # ---- Dask (--scheduler) and several experiments -----------------------------------------
    Case("report-scheduler-unreachable", f"report --experiment exp {NET} --out o "
         "--scheduler tcp://127.0.0.1:9 --scheduler-timeout 1", "--scheduler", out="o"),
    Case("heatmap-scheduler-unknown-protocol",
         f"heatmap --experiment exp {NET} --out o --scheduler foo://h:1", "--scheduler", out="o"),
    Case("report-scheduler-no-port", f"report --experiment exp {NET} --out o --scheduler "
         "tcp://127.0.0.1", "--scheduler", out="o"),
    Case("report-work-unrelated-folder", f"report --experiment exp {NET} --out o --scheduler "
         "tcp://127.0.0.1:9 --work keep", "--work keep", out="keep"),
    Case("report-experiments-list-missing", f"report --experiments nolist.txt {NET} --out o",
         "--experiments", out="o"),
    Case("report-experiments-list-empty", f"report --experiments l.txt {NET} --out o",
         "--experiments", _write("l.txt", "# none\n"), out="o"),
    Case("report-experiment-twice", f"report --experiment exp --experiment exp/ {NET} --out o",
         "experiment is given twice", out="o"),
    # ---- numeric options, encodings ---------------------------------------------------------
    Case("figures-garbage-log", "figures --run r", "r/caffe.log",
         bf.at("r/caffe.log", bf.garbage), "r"),
    Case("figures-utf16-log", "figures --run r", "r/caffe.log",
         bf.at("r/caffe.log", lambda p: p.write_bytes(
             "I1201 solver.cpp:218] Iteration 0, loss = 0.7\n".encode("utf-16"))), "r"),
    Case("classify-batch-0", f"classify {NET} --batch 0 --out o img/a.tif", "--batch", out="o"),
    Case("classify-threshold-inf", f"classify {NET} --threshold inf --out o img/a.tif",
         "--threshold", out="o"),
    Case("heatmap-stride-negative", f"heatmap {NET} --stride -4 --out o img/a.tif", "--stride",
         out="o"),
    Case("heatmap-frame-interval-nan",
         f"heatmap {NET} --frame-interval-min nan --out o img/a.tif", "--frame-interval-min",
         out="o"),
    Case("report-margin-nan", f"report --experiment exp {NET} --margin nan --out o",
         "--margin", out="o"),
    Case("heatmap-figure-format-jpg", f"heatmap {NET} --figure-format png,jpg --out o img/a.tif",
         "--figure-format", out="o"),
    Case("report-figure-format-empty", f"report --experiment exp {NET} --figure-format , --out o",
         "--figure-format", out="o"),
    Case("gradcam-per-class-0", f"gradcam --dataset ds {NET} --per-class 0 --out o",
         "--per-class", out="o"),
    Case("classmodel-epsilon-nan", f"classmodel {NET} --epsilon nan --out o", "--epsilon",
         out="o"),
    Case("classmodel-lambda1-negative", f"classmodel {NET} --lambda1 -1 --out o", "--lambda1",
         out="o"),
    Case("evaluate-seed-negative",
         "evaluate --weights net/weights.caffemodel --dataset ds --seed -1 --out o", "--seed",
         out="o"),
    Case("evaluate-resamples-0",
         "evaluate --weights net/weights.caffemodel --dataset ds --resamples 0 --out o",
         "--resamples", out="o"),
    Case("dataset-test-fraction-1", "dataset A --experiment exp --test-fraction 1 --out o",
         "--test-fraction", out="o"),
    Case("dataset-seed-negative", "dataset A --experiment exp --seed -1 --out o", "--seed",
         out="o"),
    Case("dataset-sick-min-dose-negative",
         "dataset A --experiment exp --sick-min-dose -5 --out o", "--sick-min-dose", out="o"),
    Case("train-base-lr-nan", "train --dataset ds --solver s.prototxt --run r --base-lr nan",
         "--base-lr", out="r"),
    Case("train-base-lr-negative",
         "train --dataset ds --solver s.prototxt --run r --base-lr -0.1", "--base-lr", out="r"),
    Case("train-loss-diverges-to-nan",
         "train --dataset ds --solver tiny/solver.prototxt --run r --base-lr 1e30 --no-progress",
         "--base-lr",
         bf.tiny, "r"),
    Case("train-seed-negative", "train --dataset ds --solver s.prototxt --run r --seed -1",
         "--seed", out="r"),
    Case("describe-size-0-0", "describe net/deploy.prototxt --size 0 0", "--size"),
    Case("simulate-seed-negative", "simulate --preset tiny --seed -1 --out o", "--seed",
         out="o"),
    Case("simulate-dose-nan", "simulate --preset tiny --doses 0 nan --out o", "--doses",
         out="o"),
    Case("simulate-size-0", "simulate --preset tiny --size 0 256 --out o", "--size", out="o"),
    Case("demo-max-iter-0", "demo --max-iter 0 --out o", "--max-iter", out="o"),
    Case("demo-base-lr-inf", "demo --base-lr inf --out o", "--base-lr", out="o"),
    Case("annotate-max-dose-nan",
         "annotate serve --experiment exp --db v.sqlite --max-dose-s nan", "--max-dose-s",
         out="v.sqlite"),
    Case("dataset-latin1-manifest", "dataset A --experiment exp --out o", "exp/manifest.csv",
         bf.edited_text("exp/manifest.csv", "exp/manifest.csv", "P,", "Platte-\u00e4,",
                        "latin-1"), "o"),
    Case("heatmap-latin1-manifest", f"heatmap --experiment exp {NET} --out o",
         "exp/manifest.csv", bf.edited_text("exp/manifest.csv", "exp/manifest.csv", "P,",
                                            "Platte-\u00e4,", "latin-1"), "o"),
    Case("report-utf16-manifest", f"report --experiment exp {NET} --out o",
         "exp/manifest.csv", bf.edited_text("exp/manifest.csv", "exp/manifest.csv", "P,",
                                            "P,", "utf-16"), "o"),
    Case("dataset-b-latin1-votes", "dataset B --experiment exp --votes v.csv --out o",
         "v.csv", bf.at("v.csv", bf.latin1,
                        "item_id,annotator,label,overlap,created_at\nx,J\u00fcrgen,sick,0,t\n"),
         "o"),
    Case("evaluate-latin1-votes",
         "evaluate --weights tiny/weights.caffemodel --dataset ds --net tiny/train_val.prototxt "
         "--votes v.csv --out o", "v.csv",
         lambda d: (bf.tiny(d), bf.latin1(d / "v.csv", "item_id,label\nJ\u00fcrgen,sick\n")),
         "o"),
    # ---- package, verify, export (issue 19) ------------------------------------------
    Case("verify-corrupted-caffemodel", "verify zoo", "zoo/w.caffemodel", _zoo("zoo", flip=True)),
    Case("verify-sha1-differs", "verify zoo", "zoo/w.caffemodel", _zoo("zoo", "0" * 40)),
    Case("verify-no-readme", "verify net", "net/readme.md"),
    Case("verify-missing-folder", "verify nothere", "nothere"),
    Case("package-out-is-weights-folder", f"package {NET} --out net", "net", out="net"),
    Case("package-bad-evaluation", f"package {NET} --evaluation keep/notes.txt --out m",
         "keep/notes.txt", out="m"),
    Case("export-unsupported-layer",
         "export --model lrn.prototxt --weights net/weights.caffemodel --out o", "lrn.prototxt",
         _write("lrn.prototxt", _INPUT.replace("16 dim: 16", "220 dim: 220")
                + 'layer { name: "norm1" type: "LRN" bottom: "data" top: "norm1" }\n'), "o"),
    Case("export-crops-0", f"export {NET} --crops 0 --out o", "--crops", out="o"),
    Case("export-check-too-small", f"export {NET} --check small.tif --out o", "small.tif",
         lambda d: tifffile.imwrite(d / "small.tif", np.zeros((100, 100), np.uint16)), "o"),
    Case("simulate-latin1-settings", "simulate --preset tiny --settings s.json --out o",
         "s.json", bf.at("s.json", bf.latin1, '{"biology": {}} # \u00e4'), "o"),
]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The fixtures that every case folder starts from (module docstring)."""
    root = tmp_path_factory.mktemp("world")
    make_experiment(root / "exp")
    (root / "net").mkdir()
    write_net(root / "net")
    (root / "img").mkdir()
    rng = np.random.default_rng(3)
    tifffile.imwrite(root / "img" / "a.tif", phase_like(rng, 300, 300))
    (root / "keep" / "data").mkdir(parents=True)
    (root / "keep" / "notes.txt").write_text("my notes\n")
    (root / "keep" / "data" / "table.csv").write_text("a,b\n1,2\n")
    return root


def snapshot(path: Path) -> dict[str, bytes] | None:
    """``{relative path: bytes}`` of every file under ``path`` (or of the file itself);
    ``None`` when nothing is there. Folders are listed with empty bytes."""
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_file():
        return {".": path.read_bytes()}
    out = {}
    for p in sorted(path.rglob("*")):
        out[str(p.relative_to(path))] = p.read_bytes() if p.is_file() else b""
    return out


def _cores_on() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, world: Path, tmp_path: Path) -> None:
    if case.needs_non_root and os.geteuid() == 0:
        pytest.skip("root is not stopped by file permissions")
    d = tmp_path / "case"
    shutil.copytree(world, d, symlinks=True)
    if case.prepare is not None:
        case.prepare(d)
    before = snapshot(d / case.out) if case.out else None
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = subprocess.run(
        [str(DEADNET), *case.argv.split()],
        cwd=d,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        preexec_fn=_cores_on,
    )
    err = proc.stderr.strip()
    assert proc.returncode == 2, f"exit {proc.returncode}\nstderr: {proc.stderr}"
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(err.splitlines()) == 1, f"not one line on stderr:\n{proc.stderr}"
    assert case.names in err, f"{case.names!r} not named in: {err}"
    cores = [p.name for p in d.rglob("core*") if p.is_file()]
    assert not cores, f"core files left: {cores}"
    if case.out:
        assert snapshot(d / case.out) == before, f"{case.out} changed"
