"""BatchNorm statistics re-estimated for deployment (deadnet_caffe.bnstats), against numpy."""

from __future__ import annotations

import json

import caffe_tiny
import numpy as np
from scipy.signal import correlate2d

from deadnet_caffe.bnstats import reestimate


def test_reestimate_gives_the_mean_of_batch_statistics(tmp_path):
    """The new running mean and variance of bn1 equal the average over the batches of the
    batch mean and (Caffe's unbiased) batch variance of conv1's output, computed here with
    numpy from the weights; every other blob is unchanged."""
    import caffe

    model = tmp_path / "deploy.prototxt"
    model.write_text(caffe_tiny.deploy())
    rng = np.random.default_rng(3)
    net = caffe.Net(str(model), caffe.TEST)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = rng.normal(size=b.data.shape)
    net.params["bn1"][2].data[...] = 7.0  # stale running averages, to be replaced
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    batch, side = 20, caffe_tiny.CROP
    z = (rng.normal(size=(2 * batch + 5, side, side)) * 2 + 1).astype(np.float32)

    out = tmp_path / "bn" / "w.caffemodel"
    stats = reestimate(model, weights, z, out, batch=batch)

    assert stats["batches"] == 2  # the 5 left over make no batch
    w, bias = net.params["conv1"][0].data, net.params["conv1"][1].data
    means, variances = [], []
    for i in range(2):
        x = z[i * batch : (i + 1) * batch]
        conv = np.stack(
            [
                [correlate2d(img, w[c, 0], mode="same") + bias[c] for c in range(w.shape[0])]
                for img in x
            ]
        )  # (batch, C, H, W); pad 1 with a 3 x 3 kernel is "same"
        m = conv.shape[0] * conv.shape[2] * conv.shape[3]
        means.append(conv.mean(axis=(0, 2, 3)))
        variances.append(conv.var(axis=(0, 2, 3)) * m / (m - 1))
    new = caffe.Net(str(model), str(out), caffe.TEST)
    mean, var, count = (b.data for b in new.params["bn1"])
    np.testing.assert_allclose(mean / count[0], np.mean(means, axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(var / count[0], np.mean(variances, axis=0), rtol=1e-4)
    assert np.isclose(stats["bn1"]["mean"], np.mean(means))
    for name in ("conv1", "scale1", "fc1", "score"):
        for old, now in zip(net.params[name], new.params[name], strict=True):
            np.testing.assert_array_equal(old.data, now.data)


def test_bnstats_command_takes_the_progress_option(tmp_path, capsys):
    """``deadnet bnstats`` accepts ``--progress/--no-progress`` like every long command (the B
    demo passed ``--no-progress`` and stopped there); the bar counts the batches on stderr.
    The two training positions' 384 x 640 frames hold 2 x 4 windows of 256 px at stride 128
    each: 12 of those 16 windows in batches of 4 are 3 batches."""
    from data_experiment import make_experiment
    from infer_nets import write_net

    from deadnet_caffe.cli import main

    positions = make_experiment(tmp_path / "exp", frames=2)
    train = [p.key for p in positions[:2]]
    ds = tmp_path / "ds"
    ds.mkdir()
    rows = [f"{p.key},{'train' if p.key in train else 'test'}\n" for p in positions]
    (ds / "split.csv").write_text("key,part\n" + "".join(rows))
    model, weights = write_net(tmp_path)
    argv = ["bnstats", "--model", str(model), "--weights", str(weights), "--experiment",
            str(tmp_path / "exp"), "--dataset", str(ds), "--windows", "12", "--frames", "1",
            "--batch", "4"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "quiet"), "--no-progress"]) == 0
    assert "batch" not in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "bar"), "--progress"]) == 0
    assert "3/3" in capsys.readouterr().err
    for out in ("quiet", "bar"):
        doc = json.loads((tmp_path / out / "bnstats.json").read_text())
        assert (doc["batches"], doc["windows"], doc["positions"]) == (3, 12, train)


def test_unlisted_adds_the_positions_the_dataset_never_used(tmp_path, capsys):
    """``--unlisted`` samples the training positions and those the split does not name;
    a test position never."""
    from data_experiment import make_experiment
    from infer_nets import write_net

    from deadnet_caffe.cli import main

    positions = make_experiment(tmp_path / "exp", frames=1)
    assert len(positions) >= 3
    train, test, unlisted = positions[0].key, positions[1].key, [p.key for p in positions[2:]]
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "split.csv").write_text(f"key,part\n{train},train\n{test},test\n")
    model, weights = write_net(tmp_path)
    argv = ["bnstats", "--model", str(model), "--weights", str(weights), "--experiment",
            str(tmp_path / "exp"), "--dataset", str(ds), "--windows", "8", "--frames", "1",
            "--batch", "4", "--no-progress"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "listed")]) == 0
    assert main([*argv, "--out", str(tmp_path / "all"), "--unlisted"]) == 0
    listed = json.loads((tmp_path / "listed" / "bnstats.json").read_text())["positions"]
    every = json.loads((tmp_path / "all" / "bnstats.json").read_text())["positions"]
    assert listed == [train]
    assert sorted(every) == sorted([train, *unlisted]) and test not in every
