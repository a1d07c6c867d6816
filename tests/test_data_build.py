"""Data Set A/B builders end to end on a tiny synthetic experiment: Caffe reads the LMDB with
the published transform_param and gets z back; splits share no position; bad input gives one
sentence, exit status 2 and no output."""

from __future__ import annotations

import csv
import json
import subprocess
import textwrap
from pathlib import Path

import h5py
import lmdb
import numpy as np
import pytest
import tifffile
from data_experiment import HEIGHT, WIDTH, make_experiment, make_votes, texture

from data_prep import writers
from data_prep.core import datum, grids, paper
from data_prep.core.errors import UserError
from data_prep.core.manifest import Position, read_manifest, write_manifest
from data_prep.core.normalize import encode_z
from data_prep.core.outdir import MARKER
from data_prep.core.paper import DATA_MEAN_VALUE, DATA_SCALE, NET_INPUT_PX
from data_prep.core.stack import Stack
from data_prep.split import split_positions
from data_prep.votes_csv import Vote, write_votes
from deadnet_caffe.caffe_env import import_caffe
from deadnet_caffe.cli import main

QUICK = ["--warps", "1", "--blurs", "1", "--rotations", "2", "--workers", "1"]


def _data_net(tmp_path: Path, source: Path, batch: int) -> Path:
    net = tmp_path / "data.prototxt"
    net.write_text(
        textwrap.dedent(f"""\
        layer {{ name: "data" type: "Data" top: "data" top: "label"
          include {{ phase: TEST }}
          transform_param {{ crop_size: {NET_INPUT_PX} mean_value: {DATA_MEAN_VALUE}
                             scale: {DATA_SCALE} }}
          data_param {{ source: "{source}" batch_size: {batch} backend: LMDB }} }}
        """)
    )
    return net


def _read_with_caffe(tmp_path: Path, source: Path, batch: int):
    caffe = import_caffe()
    caffe.set_mode_cpu()
    net = caffe.Net(str(_data_net(tmp_path, source, batch)), caffe.TEST)
    net.forward()
    return net.blobs["data"].data.copy(), net.blobs["label"].data.copy()


def test_datum_round_trip_through_caffe_data_layer(tmp_path, rng):
    z = rng.normal(size=(3, 256, 256)).astype(np.float32)
    db = tmp_path / "rt.lmdb"
    w = writers.LmdbWriter(db)
    w.write([(b"%02d" % i, datum.datum_bytes(encode_z(z[i]), i % 2)) for i in range(3)])
    w.close()
    data, label = _read_with_caffe(tmp_path, db, 3)
    assert data.shape == (3, 1, 220, 220)
    np.testing.assert_allclose(data[:, 0], z[:, 18:238, 18:238], atol=2e-3)  # centre crop
    np.testing.assert_array_equal(label, [0, 1, 0])
    # protobuf parses the packed bytes into the same Datum as protobuf-Python's own bytes.
    from caffe.proto import caffe_pb2

    fast = datum.datum_bytes(encode_z(z[0]), 1)
    slow = writers.datum_bytes_protobuf(encode_z(z[0]), 1)
    a, b = caffe_pb2.Datum(), caffe_pb2.Datum()
    a.ParseFromString(fast)
    b.ParseFromString(slow)
    assert a == b and a.label == 1 and (a.channels, a.height, a.width) == (1, 256, 256)
    v, lab = datum.parse_datum(fast)
    np.testing.assert_array_equal(v[0], encode_z(z[0]))
    assert lab == 1 and len(fast) < len(slow)


def test_lmdb_writer_grows_map_and_reopens(tmp_path, monkeypatch):
    monkeypatch.setattr(writers, "_INITIAL_MAP_SIZE", 1 << 20)
    monkeypatch.setattr(writers, "REOPEN_BYTES", 1 << 20)
    w = writers.LmdbWriter(tmp_path / "g.lmdb")
    record = datum.datum_bytes(np.zeros((256, 256), np.float32), 0)
    for i in range(20):  # 20 x 262 kB > 1 MiB
        w.write([(b"%03d" % i, record)])
    w.close()
    with lmdb.open(str(tmp_path / "g.lmdb"), readonly=True, lock=False) as env:
        assert env.stat()["entries"] == 20


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    make_votes(root, make_experiment(root))
    return root


@pytest.fixture(scope="module")
def built_a(experiment, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "A"
    assert main(["dataset", "A", "--experiment", str(experiment), "--out", str(out),
                 "--format", "both", "--hdf5-rows", "10", *QUICK]) == 0  # fmt: skip
    return out


def test_dataset_a_outputs_card_split_and_caffe_reads_it(built_a, tmp_path):
    card = json.loads((built_a / "dataset.json").read_text())
    assert card["labels"] == {"0": "healthy", "1": "sick"}
    # 2 train positions per class, 1 frame, w x r x b = 1 x 2 x 1, 3 crops per frame.
    assert card["counts"]["train"]["crops"] == 4 * 2 * 3
    assert card["counts"]["train"]["per_class"] == {"healthy": 12, "sick": 12}
    assert card["counts"]["test"]["crops"] == 2 * 3
    assert "P/W6/p1" not in card["positions"]  # 40 s, alive at the end: not in Data Set A
    rows = (built_a / "split.csv").read_text().splitlines()[1:]
    parts = {r.split(",")[0]: r.split(",")[6] for r in rows}
    assert sorted(parts.values()).count("test") == 2
    # test_index.csv: one row per test record, naming its (test) position and dose.
    with (built_a / "test_index.csv").open(newline="") as fh:
        index = list(csv.DictReader(fh))
    assert len(index) == 2 * 3
    assert {r["position"] for r in index} == {k for k, part in parts.items() if part == "test"}
    assert {(r["dose_s"], r["label"]) for r in index} <= {("0", "0"), ("200", "1")}
    data, label = _read_with_caffe(tmp_path, built_a / "train.lmdb", 24)
    assert sorted(label.tolist()) == [0.0] * 12 + [1.0] * 12
    assert label.tolist() != sorted(label.tolist())  # records are shuffled
    assert abs(data.mean()) < 0.2 and 0.8 < data.std() < 1.2  # z of normalised crops
    # HDF5 twin: same records in the same (shuffled) order, z stored directly, 10 per file.
    listing = (built_a / "train_h5.txt").read_text().split()
    assert [Path(p).name for p in listing] == [f"train_{i:04d}.h5" for i in range(3)]
    parts_h5 = [h5py.File(p) for p in listing]
    assert [f["data"].shape[0] for f in parts_h5] == [10, 10, 4]
    h5data = np.concatenate([f["data"][:] for f in parts_h5])
    h5label = np.concatenate([f["label"][:] for f in parts_h5])
    for f in parts_h5:
        f.close()
    assert h5data.shape == (24, 1, 256, 256)
    np.testing.assert_array_equal(h5label, label)
    np.testing.assert_allclose(h5data[:, :, 18:238, 18:238], data, atol=2e-3)
    assert not list(built_a.parent.glob(".A.*"))  # no temporary folder left


def test_build_is_deterministic_across_worker_counts(experiment, built_a, tmp_path):
    out = tmp_path / "A2"
    args = ["dataset", "A", "--experiment", str(experiment), "--out", str(out), *QUICK]
    args[args.index("--workers") + 1] = "2"
    assert main(args) == 0
    with (
        lmdb.open(str(out / "train.lmdb"), readonly=True, lock=False) as e1,
        lmdb.open(str(built_a / "train.lmdb"), readonly=True, lock=False) as e2,
        e1.begin() as t1,
        e2.begin() as t2,
    ):
        assert list(t1.cursor()) == list(t2.cursor())


def test_dataset_b_labels_concordance_and_counts(experiment, tmp_path):
    out = tmp_path / "B"
    assert main(["dataset", "B", "--experiment", str(experiment), "--out", str(out),
                 "--time-frames", "2", "--blurs", "1", "--noise-copies", "1",
                 "--rotations", "2", "--workers", "1"]) == 0  # fmt: skip
    card = json.loads((out / "dataset.json").read_text())
    # 4 positions <= 80 s, each: 2 concordant items, 1 unsure-only, 1 discordant.
    assert card["items_used"] == 8 and card["items_above_max_dose"] == 6
    assert card["items_unsure_only"] == 7 and card["items_discordant"] == 7
    assert card["concordance"]["overlap"] == 21 and card["concordance"]["disagree"] == 7
    n_train = card["counts"]["train"]["positions"]
    assert card["counts"]["train"]["crops"] == 2 * n_train * 2 * 2  # items x t x r
    assert card["counts"]["test"]["crops"] == 2 * card["counts"]["test"]["positions"] * 10
    _, label = _read_with_caffe(tmp_path, out / "test.lmdb", card["counts"]["test"]["crops"])
    assert set(label.tolist()) <= {0.0, 1.0}


def test_split_shares_no_positions_and_is_balanced():
    strata = {f"p/w{i}/s{j}": (i % 2, float(10 * (i // 2))) for i in range(8) for j in range(4)}
    a = split_positions(strata, 0.25, seed=3, where="m")
    assert a == split_positions(strata, 0.25, seed=3, where="m")
    assert set(a) == set(strata)  # every position in exactly one part
    test = [k for k, v in a.items() if v == "test"]
    assert len(test) == 8  # one of 4 per (class, dose) stratum
    for stratum in set(strata.values()):
        assert sum(strata[k] == stratum for k in test) == 1
    with pytest.raises(UserError, match="test set"):
        split_positions({"a/b/c": (0, 0.0), "a/b/d": (1, 0.0)}, 0.25, 0, "m")


def test_readers_hyperstack_ome_lzw_and_folder(tmp_path, rng):
    a = rng.integers(0, 4000, size=(3, 2, 260, 270)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "hs.tif", a, imagej=True, metadata={"axes": "TCYX"})
    tifffile.imwrite(tmp_path / "x.ome.tif", a, metadata={"axes": "TCYX"}, compression="zlib")
    tifffile.imwrite(tmp_path / "lzw.tif", a[:, 0], compression="lzw", photometric="minisblack")
    (tmp_path / "dir").mkdir()
    for t in range(3):
        tifffile.imwrite(tmp_path / "dir" / f"f{t:02d}.tif", a[t, 1].astype(np.uint8))
    for name, channel, expect in (
        ("hs.tif", 1, a[:, 1]),
        ("x.ome.tif", 1, a[:, 1]),
        ("lzw.tif", None, a[:, 0]),
        ("dir", None, a[:, 1].astype(np.uint8)),
    ):
        s = Stack(tmp_path / name, channel)
        assert (s.n_frames, s.height, s.width) == (3, 260, 270)
        np.testing.assert_array_equal(s.read(2), expect[2])
    with pytest.raises(UserError, match="channels"):
        Stack(tmp_path / "hs.tif", None)


def _bad(root: Path, case: str) -> None:
    positions = make_experiment(root, frames=2)
    p0 = positions[0].path
    if case == "corrupt":
        p0.write_bytes(b"II*\x00garbage" * 10)
    elif case == "truncated":
        p0.write_bytes(p0.read_bytes()[: p0.stat().st_size // 2])
    elif case == "small":
        tifffile.imwrite(p0, np.zeros((2, 200, 300), np.uint16), photometric="minisblack")
    elif case == "rgb":
        tifffile.imwrite(p0, np.zeros((2, 300, 300, 3), np.uint8), photometric="rgb")
    elif case == "nan":
        img = np.ones((2, 384, 640), np.float32)
        img[0, 5, 5] = np.nan
        tifffile.imwrite(p0, img, photometric="minisblack")
    elif case == "missing":
        p0.unlink()
    elif case == "duplicate":
        write_manifest(root, [*positions, positions[0]])
    elif case == "unknown_label":
        (root / "votes.csv").write_text(
            "item_id,annotator,label,overlap,created_at\nP/W0/p1@t0y0x0,a,dead,0,x\n"
        )
    elif case == "empty_class":
        write_manifest(root, [p for p in positions if p.dose_s != 0])
    elif case == "empty_test":
        keep = [positions[0], positions[1], positions[3]]
        write_manifest(root, keep)


@pytest.mark.parametrize(
    ("case", "dataset", "words"),
    [
        ("corrupt", "A", "w0_p1.tif"),
        ("truncated", "A", "truncated"),
        ("small", "A", "smaller than one 256 px crop"),
        ("rgb", "A", "RGB"),
        ("nan", "A", "NaN"),
        ("missing", "A", "does not exist"),
        ("duplicate", "A", "listed twice"),
        ("unknown_label", "B", "unknown label"),
        ("empty_class", "A", "no healthy"),
        ("empty_test", "A", "test set with no sick"),
    ],
)
def test_bad_input_one_sentence_exit_2_nothing_written(tmp_path, capsys, case, dataset, words):
    root = tmp_path / "exp"
    _bad(root, case)
    out = tmp_path / "out"
    assert main(["dataset", dataset, "--experiment", str(root), "--out", str(out), *QUICK]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("deadnet dataset: ") and words in err
    assert str(root) in err or "--" in err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_rerun_removes_stale_partial_and_replaces_output(experiment, tmp_path):
    out = tmp_path / "A"
    finished = subprocess.Popen(["true"])  # a process that is gone: the stale run's owner
    finished.wait()
    dead = finished.pid
    stale = tmp_path / f".A.partial-{dead}-0123abcd"
    stale.mkdir()
    (stale / "train.lmdb").mkdir()
    (stale / MARKER).write_text(
        json.dumps({"tool": "deadnet-caffe", "command": "dataset", "pid": dead, "pid_start": "1"})
    )
    args = ["dataset", "A", "--experiment", str(experiment), "--out", str(out), *QUICK]
    assert main(args) == 0 and main(args) == 0
    assert not stale.exists() and (out / "dataset.json").is_file()
    assert len(read_manifest(experiment)) == 7


def test_dataset_b_balance_gives_the_rarer_class_extra_copies(experiment, tmp_path):
    args = ["--experiment", str(experiment), "--time-frames", "1", "--blurs", "1",
            "--noise-copies", "1", "--rotations", "1", "--workers", "1"]  # fmt: skip
    assert main(["dataset", "B", *args, "--out", str(tmp_path / "plain")]) == 0
    assert main(["dataset", "B", *args, "--out", str(tmp_path / "bal"), "--balance"]) == 0
    plain = json.loads((tmp_path / "plain/dataset.json").read_text())
    bal = json.loads((tmp_path / "bal/dataset.json").read_text())
    n = plain["counts"]["train"]["per_class"]  # one crop per training item here
    rare, common = sorted(n, key=lambda k: n[k])
    k = round(n[common] / n[rare])
    assert k >= 2  # the fixture's training items are unbalanced
    assert plain["train_copies_per_item"] == {"healthy": 1, "sick": 1}
    assert bal["train_copies_per_item"] == {rare: k, common: 1}
    assert bal["counts"]["train"]["per_class"] == {rare: k * n[rare], common: n[common]}
    assert bal["counts"]["test"] == plain["counts"]["test"]  # the test set is untouched
    total = bal["counts"]["train"]["crops"]
    _, label = _read_with_caffe(tmp_path, tmp_path / "bal/train.lmdb", total)
    assert int((label == 1).sum()) == bal["counts"]["train"]["per_class"]["sick"]


@pytest.mark.parametrize(
    ("argv", "per_crop"),
    [
        # the paper's w x r x b = 3 x 8 x 2 = 48 per crop position; x 54 = 2592 per full frame
        (["--warps", "3", "--rotations", "8", "--blurs", "2"], 48),
        # "0 copies means one": no warp and no blur still give one copy of each view
        (["--warps", "0", "--rotations", "8", "--blurs", "0"], 8),
    ],
)
def test_dataset_a_full_multiplicities_on_tiny_frames(experiment, tmp_path, argv, per_crop):
    assert per_crop * len(grids.crop_grid(1024, 1344)) == (2592 if per_crop == 48 else 432)
    assert paper.AUG_A_TOTAL == 48 * 54
    out = tmp_path / "A"
    assert main(["dataset", "A", "--experiment", str(experiment), "--out", str(out),
                 "--workers", "1", *argv]) == 0  # fmt: skip
    card = json.loads((out / "dataset.json").read_text())
    crops = len(grids.crop_grid(HEIGHT, WIDTH))  # 3 on the tiny 384 x 640 frames
    n_train = card["counts"]["train"]["positions"]  # one frame each (as in the test above)
    assert n_train == 4
    assert card["counts"]["train"]["crops"] == n_train * per_crop * crops
    with lmdb.open(str(out / "train.lmdb"), readonly=True, lock=False) as env:
        assert env.stat()["entries"] == n_train * per_crop * crops


@pytest.fixture(scope="module")
def item_experiment(tmp_path_factory):
    """Four positions of ten 256 x 256 frames (one crop each), one concordant item each at
    t0 = 0: two dose-0 healthy, two 40 s sick; the split puts one of each class in train."""
    root = tmp_path_factory.mktemp("items")
    rng = np.random.default_rng(5)
    positions, votes = [], []
    for i, (dose, label) in enumerate(((0.0, "healthy"), (0.0, "healthy"), (40.0, "sick"),
                                       (40.0, "sick"))):  # fmt: skip
        path = root / f"w{i}.tif"
        tifffile.imwrite(path, texture(rng, 10, 256, 256), photometric="minisblack")
        p = Position("P", f"W{i}", "p1", dose, 8.0, 0.3225, 10, path)
        positions.append(p)
        votes += [Vote(f"{p.key}@t0y0x0", a, label, a == "ann2", "2024-01-01T00:00:00Z")
                  for a in ("ann1", "ann2")]  # fmt: skip
    write_manifest(root, positions)
    write_votes(root / "votes.csv", votes)
    return root


@pytest.mark.parametrize(
    ("argv", "per_item"),
    [
        # section 2.3: r x b x t x n = 8 x 3 x 10 x 3 = 720 per annotated crop (the defaults)
        ([], 8 * 3 * 10 * 3),
        # "0 copies means one": no blur and no noise still give one copy of each view
        (["--blurs", "0", "--noise-copies", "0"], 8 * 1 * 10 * 1),
    ],
)
def test_dataset_b_full_multiplicities_on_tiny_frames(item_experiment, tmp_path, argv, per_item):
    assert (paper.AUG_B_TOTAL, 8 * 3 * 10 * 3) == (720, 720)
    out = tmp_path / "B"
    assert main(["dataset", "B", "--experiment", str(item_experiment), "--out", str(out),
                 "--workers", "1", "--no-progress", *argv]) == 0  # fmt: skip
    card = json.loads((out / "dataset.json").read_text())
    assert card["counts"]["train"]["positions"] == 2  # one item each, one of each class
    assert card["counts"]["train"]["crops"] == 2 * per_item
    assert card["counts"]["test"]["crops"] == 2 * 10  # test items: the 10 frames, unaugmented
    for part, n in (("train", per_item), ("test", 10)):
        with lmdb.open(str(out / f"{part}.lmdb"), readonly=True, lock=False) as env:
            labels = [datum.parse_datum(v)[1] for _, v in env.begin().cursor()]
        assert sorted(labels) == [0] * n + [1] * n


def _positions_of(dataset: Path, part: str) -> set[str]:
    """Every key of ``part``.lmdb, looked up in its index: the set of its stage positions."""
    with (dataset / f"{part}_index.csv").open(newline="") as fh:
        index = {r["key"]: r["position"] for r in csv.DictReader(fh)}
    with lmdb.open(str(dataset / f"{part}.lmdb"), readonly=True, lock=False) as env:
        keys = [k.decode() for k in env.begin().cursor().iternext(values=False)]
    assert keys and set(keys) == set(index)  # every record is indexed, and only those
    return {index[k] for k in keys}


@pytest.mark.parametrize("dataset", ["A", "B"])
def test_no_stage_position_in_both_lmdbs(experiment, tmp_path, dataset):
    out = tmp_path / dataset
    extra = ["--time-frames", "2", "--noise-copies", "1"] if dataset == "B" else ["--warps", "1"]
    assert main(["dataset", dataset, "--experiment", str(experiment), "--out", str(out),
                 "--blurs", "1", "--rotations", "2", "--workers", "1", *extra]) == 0  # fmt: skip
    train, test = _positions_of(out, "train"), _positions_of(out, "test")
    assert train and test and not train & test
    with (out / "split.csv").open(newline="") as fh:
        parts = {r["key"]: r["part"] for r in csv.DictReader(fh)}
    assert {parts[p] for p in train} == {"train"} and {parts[p] for p in test} == {"test"}
