"""deadnet evaluate: both BatchNorm modes against Caffe's own nets, reports, metadata, votes."""

from __future__ import annotations

import csv
import json

import caffe_tiny
import numpy as np
import pytest

from deadnet_caffe.cli import main
from deadnet_caffe.train import TrainSettings, train

N_TEST = 16  # two batches of 8
POSITIONS = [f"plate1/A{i % 4 + 1}/p1" for i in range(N_TEST)]
DOSES = [0.0, 0.0, 20.0, 80.0]  # per well A1..A4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    keys = [f"{p}/{i:05d}" for i, p in enumerate(POSITIONS)]
    ds = caffe_tiny.write_dataset(tmp / "ds", 64, N_TEST, test_keys=keys)
    with open(ds / "test_index.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "position", "dose_s"])
        for i, k in enumerate(keys):
            w.writerow([k, POSITIONS[i], DOSES[i % 4]])
    solver = caffe_tiny.write_solver(tmp / "net", max_iter=30)
    train(TrainSettings(dataset=str(ds), solver=str(solver), run=str(tmp / "run"), seed=2),
          progress=False)  # fmt: skip
    return tmp / "run", ds, tmp


def _caffe_probs(net, score: str, n_batches: int) -> tuple[np.ndarray, list[float]]:
    probs, acc = [], []
    for _ in range(n_batches):
        net.forward()
        s = net.blobs[score].data.astype(np.float64)
        e = np.exp(s - s.max(axis=1, keepdims=True))
        probs.append(e[:, 1] / e.sum(axis=1))
        acc.append(float(net.blobs["accuracy"].data))
    return np.concatenate(probs), acc


def test_evaluate_matches_caffe_and_writes_reports(run, capsys):
    import caffe

    run_dir, ds, tmp = run
    votes = tmp / "votes.csv"
    with open(votes, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["item_id", "annotator", "label", "overlap", "created_at"])
        for i, label in enumerate(["healthy", "healthy", "sick", "unsure", "healthy"]):
            w.writerow([f"plate1/A1/p1@t{i}y0x0", "ann", label, 0, "2026-01-01T00:00:00Z"])
        w.writerow(["plate1/A3/p1@t0y0x0", "ann", "sick", 0, "2026-01-01T00:00:00Z"])
    rc = main(["evaluate", "--weights", str(run_dir / "latest.caffemodel"), "--dataset",
               str(ds), "--votes", str(votes), "--resamples", "20000"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    out = run_dir / "evaluation"
    doc = json.loads((out / "evaluation.json").read_text())
    assert doc["primary_mode"] == "published_val"
    assert doc["ci_low"] <= doc["accuracy"] <= doc["ci_high"]
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # LMDB order (sorted keys), as Caffe's Data layer reads it
    assert [r["key"] for r in rows] == sorted(f"{p}/{i:05d}" for i, p in enumerate(POSITIONS))

    # published val mode == Caffe's own val net (Data layer, centre crop, batch statistics)
    net = caffe.Net(str(run_dir / "train_val.prototxt"), str(run_dir / "latest.caffemodel"),
                    caffe.TEST)  # fmt: skip
    want, acc = _caffe_probs(net, "score", N_TEST // 8)
    got = np.array([float(r["p_sick_published_val"]) for r in rows])
    np.testing.assert_allclose(got, want, atol=1e-5)
    val = doc["modes"]["published_val"]
    assert val["accuracy_all_crops"]["estimate"] == pytest.approx(np.mean(acc))

    # global-statistics mode == the deploy net (running averages), one crop at a time
    deploy = tmp / "deploy.prototxt"
    deploy.write_text(caffe_tiny.deploy())
    dnet = caffe.Net(str(deploy), str(run_dir / "latest.caffemodel"), caffe.TEST)
    gnet = caffe.Net(str(run_dir / "train_val.prototxt"), str(run_dir / "latest.caffemodel"),
                     caffe.TEST)  # fmt: skip
    want_g = []
    for _ in range(N_TEST // 8):
        gnet.forward()
        for crop in gnet.blobs["data"].data:
            dnet.blobs["data"].data[0] = crop
            want_g.append(float(dnet.forward()["prob"][0, 1]))
    got_g = np.array([float(r["p_sick_global_stats"]) for r in rows])
    np.testing.assert_allclose(got_g, want_g, atol=1e-5)

    # counts, per dose / position, unexposed check and annotators, from the predictions
    pred = np.array([int(r["pred_published_val"]) for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    cm = np.array(val["confusion_matrix"]["counts"])
    assert cm.sum() == N_TEST and np.trace(cm) == (pred == labels).sum()
    assert set(val["per_dose"]) == {"0.0", "20.0", "80.0"} and val["per_dose"]["0.0"]["n"] == 8
    assert set(val["per_position"]) == set(POSITIONS)
    # every group exactly: n, correct and accuracy counted here from predictions.csv
    dose = np.array([float(r["dose_s"]) for r in rows])
    position = np.array([r["position"] for r in rows])
    groups = [(dose == float(d), got) for d, got in val["per_dose"].items()]
    groups += [(position == p, got) for p, got in val["per_position"].items()]
    assert len(groups) == 3 + len(set(POSITIONS))
    for sel, got in groups:
        k = int((pred[sel] == labels[sel]).sum())
        assert (got["n"], got["correct"]) == (int(sel.sum()), k)
        assert got["accuracy"] == k / sel.sum()
    unexp = val["unexposed"]
    dose0 = np.array([float(r["dose_s"]) == 0 for r in rows])
    assert unexp["n"] == 8
    assert unexp["fraction_healthy"] == pytest.approx(np.mean(pred[dose0] == 0))
    assert unexp["annotators"]["n"] == 4 and unexp["annotators"]["fraction_healthy"] == 0.75
    report = (out / "report.md").read_text()
    assert "published val mode" in report and "global-statistics mode" in report
    for name in ("figure3c_misclassified.png", "figure3d_correct.png", "settings.json"):
        assert (out / name).stat().st_size > 0


def test_evaluate_without_metadata_degrades(run, tmp_path):
    run_dir, ds, _ = run
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "test.lmdb").symlink_to(ds / "test.lmdb")
    out = tmp_path / "ev"
    rc = main(["evaluate", "--weights", str(run_dir / "latest.caffemodel"), "--dataset",
               str(bare), "--out", str(out), "--resamples", "2000",
               "--figure-format", "svg,png"])  # fmt: skip
    assert rc == 0
    assert b"<svg" in (out / "figure3c_misclassified.svg").read_bytes()[:1000]
    assert "figure3c_misclassified.svg" in (out / "report.md").read_text()
    doc = json.loads((out / "evaluation.json").read_text())
    assert doc["metadata_source"] == "none"
    assert doc["modes"]["global_stats"]["per_dose"] == {}
    assert doc["modes"]["global_stats"]["unexposed"]["available"] is False


def test_bad_input_writes_nothing(run, tmp_path, capsys):
    run_dir, ds, _ = run
    out = tmp_path / "ev"
    rc = main(["evaluate", "--weights", str(tmp_path / "none.caffemodel"), "--dataset",
               str(ds), "--out", str(out)])  # fmt: skip
    assert rc == 2 and not out.exists()
    assert "none.caffemodel does not exist" in capsys.readouterr().err
    rc = main(["evaluate", "--weights", str(run_dir / "latest.caffemodel"), "--dataset",
               str(tmp_path), "--out", str(out)])  # fmt: skip
    assert rc == 2 and not out.exists()


def test_last_short_batch_wraps_like_caffe(run, tmp_path):
    """12 records at batch 8: the second batch is records 8-11 plus 0-3, as Caffe reads it."""
    import caffe

    run_dir, _, _ = run
    ds = caffe_tiny.write_dataset(tmp_path / "ds", 8, 12, seed=9)
    net_txt = caffe_tiny.train_val(dropout=False)
    for split in ("train.lmdb", "test.lmdb"):
        net_txt = net_txt.replace(f'"{split}"', f'"{ds / split}"')
    (tmp_path / "tv.prototxt").write_text(net_txt)
    out = tmp_path / "ev"
    rc = main(["evaluate", "--weights", str(run_dir / "latest.caffemodel"), "--dataset",
               str(ds), "--net", str(tmp_path / "tv.prototxt"), "--out", str(out),
               "--resamples", "2000"])  # fmt: skip
    assert rc == 0
    with open(out / "predictions.csv", newline="") as fh:
        got = np.array([float(r["p_sick_published_val"]) for r in csv.DictReader(fh)])
    net = caffe.Net(str(tmp_path / "tv.prototxt"), str(run_dir / "latest.caffemodel"), caffe.TEST)
    want, _ = _caffe_probs(net, "score", 2)
    assert got.shape == (12,)
    np.testing.assert_allclose(got, want[:12], atol=1e-5)


def test_gallery_picks_most_confident_first():
    from deadnet_caffe.gallery import pick

    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([0.9, 0.6, 0.1, 0.2, 0.95, 0.45])
    wrong = pick(labels, probs, 8, wrong=True)
    assert wrong[0].tolist() == [0, 1] and wrong[1].tolist() == [3, 5]
    right = pick(labels, probs, 1, wrong=False)
    assert right[0].tolist() == [2] and right[1].tolist() == [4]


def test_data_set_a_card_implies_doses_by_label(run, tmp_path):
    """Without test_index.csv, Data Set A's card gives each class's dose (one per class)."""
    run_dir, ds, _ = run
    card = {
        "dataset": "A",
        "labels": {"0": "healthy", "1": "sick"},
        "positions": {
            "P/W0/p1": {"part": "test", "label": "healthy", "dose_s": 0.0},
            "P/W1/p1": {"part": "test", "label": "healthy", "dose_s": 0.0},
            "P/W2/p1": {"part": "train", "label": "sick", "dose_s": 100.0},
            "P/W5/p1": {"part": "test", "label": "sick", "dose_s": 200.0},
        },
    }
    for name, dataset in (("a", "A"), ("b", "B")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "test.lmdb").symlink_to(ds / "test.lmdb")
        (folder / "dataset.json").write_text(json.dumps({**card, "dataset": dataset}))
        rc = main(["evaluate", "--weights", str(run_dir / "latest.caffemodel"), "--dataset",
                   str(folder), "--out", str(tmp_path / f"ev_{name}"), "--resamples", "2000",
                   "--no-progress"])  # fmt: skip
        assert rc == 0
    doc = json.loads((tmp_path / "ev_a" / "evaluation.json").read_text())
    mode = doc["modes"]["published_val"]
    assert {k: v["n"] for k, v in mode["per_dose"].items()} == {"0.0": 8, "200.0": 8}
    assert {k: v["n"] for k, v in mode["per_position"].items()} == {"P/W5/p1": 8}
    assert mode["unexposed"]["n"] == 8
    assert "healthy: dose; sick: dose; sick: position" in doc["metadata_source"]
    doc_b = json.loads((tmp_path / "ev_b" / "evaluation.json").read_text())
    assert doc_b["metadata_source"] == "none" and doc_b["modes"]["published_val"]["per_dose"] == {}


def test_virtual_batches_run_through_the_val_net(tmp_path, capsys):
    """Section 2.5's default reading: each 10 + 10 virtual batch is one batch of 20 of the
    published-style val net (batch statistics). Checked against Caffe reading that batch
    from an LMDB of its own; the estimate is the same under both bootstrap readings."""
    import caffe
    import lmdb

    ds = caffe_tiny.write_dataset(tmp_path / "ds", 40, 30, seed=4)
    solver = caffe_tiny.write_solver(tmp_path / "net", max_iter=10, batch=20)
    run = tmp_path / "run"
    train(TrainSettings(dataset=str(ds), solver=str(solver), run=str(run), seed=1),
          progress=False)  # fmt: skip
    rc = main(["evaluate", "--weights", str(run / "latest.caffemodel"), "--dataset", str(ds),
               "--resamples", "5000"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((run / "evaluation" / "evaluation.json").read_text())
    idx = np.array(doc["virtual_batch_records"])
    assert idx.shape == (100, 20)
    val = doc["modes"]["published_val"]
    assert set(val["readings"]) == {"batch_statistics", "fixed_pass"}
    assert set(doc["modes"]["global_stats"]["readings"]) == {"fixed_pass"}
    assert val["virtual_batch_source"] == "batch_statistics"
    table = np.array(val["virtual_batch_correct"]["batch_statistics"], bool)
    for src, per in val["readings"].items():
        t = np.array(val["virtual_batch_correct"][src], bool)
        assert per["classifications"]["estimate"] == pytest.approx(t.mean())
        assert per["batches"]["estimate"] == pytest.approx(t.mean())
    assert doc["accuracy"] == pytest.approx(table.mean())
    # Caffe's own val net on batches 0..2, each written as an LMDB of exactly that batch
    env = lmdb.open(str(ds / "test.lmdb"), readonly=True, lock=False)
    with env.begin() as txn:
        records = [v for _, v in txn.cursor()]
    env.close()
    net_text = (run / "train_val.prototxt").read_text()
    for b in range(3):
        one = tmp_path / f"batch{b}.lmdb"
        benv = lmdb.open(str(one), map_size=1 << 26)
        with benv.begin(write=True) as txn:
            for k, i in enumerate(idx[b]):
                txn.put(b"%02d" % k, records[i])
        benv.close()
        net_file = tmp_path / f"val{b}.prototxt"
        net_file.write_text(net_text.replace(str((ds / "test.lmdb").resolve()), str(one)))
        net = caffe.Net(str(net_file), str(run / "latest.caffemodel"), caffe.TEST)
        net.forward()
        pred = net.blobs["score"].data.argmax(axis=1)
        labels = net.blobs["label"].data.astype(int)
        np.testing.assert_array_equal(pred == labels, table[b])
