"""Model Zoo packaging, ONNX export and the bioimage.io package (issue 19, parts 3 and 4).

Every ONNX answer is checked against pycaffe running the same deploy net and weights (the
known answer computed by Caffe itself, not by the converter); package checksums against
hashlib; the bioimage.io package with bioimageio.core's own test.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import caffe_tiny
import numpy as np
import pytest
import tifffile
from data_experiment import make_experiment
from infer_nets import phase_like

from data_prep.core.errors import UserError
from deadnet_caffe import onnx_export as ox
from deadnet_caffe.cli import main
from deadnet_caffe.infer import DeployNet
from deadnet_caffe.netspec import load_net_param

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-4


def _caffe_p(model: Path, weights: Path, z: np.ndarray) -> np.ndarray:
    return DeployNet(model, weights).probs(z)[:, 1]


def _onnx_p(onnx_model, z: np.ndarray) -> np.ndarray:
    return ox.run_batches(ox.session(onnx_model), z)[0][:, 1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A trained tiny net (60 iterations), its evaluation, and a data set that names a raw
    experiment (so that the model card has imaging conditions to find)."""
    tmp = tmp_path_factory.mktemp("export")
    exp = tmp / "exp"
    make_experiment(exp, frames=2)
    # the simulator's settings.json (data_prep.sim.plate), as the model card reads it
    (exp / "settings.json").write_text(
        json.dumps(
            {"settings": {"layout": {"pixel_size_um": 0.3225}, "optics": {"na": 0.75}, "seed": 5}}
        )
    )
    ds = caffe_tiny.write_dataset(tmp / "ds", 64, 32)
    solver = caffe_tiny.write_solver(tmp / "net")
    run = tmp / "run"
    assert main(["train", "--dataset", str(ds), "--solver", str(solver), "--run", str(run),
                 "--seed", "3", "--no-progress"]) == 0  # fmt: skip
    weights = run / "latest.caffemodel"
    assert main(["evaluate", "--weights", str(weights), "--dataset", str(ds), "--net",
                 str(run / "train_val.prototxt"), "--resamples", "200", "--gallery", "1",
                 "--no-progress"]) == 0  # fmt: skip
    # what `deadnet dataset` writes and the model card reads (after evaluate, which wants
    # a whole card); the experiment path relative, as the demo writes it
    (ds / "settings.json").write_text(json.dumps({"settings": {"experiment": "exp"}}))
    (ds / "dataset.json").write_text(json.dumps({
        "dataset": "A", "labels": {"0": "healthy", "1": "sick"},
        "counts": {"train": {"crops": 64, "per_class": {"healthy": 32, "sick": 32},
                             "positions": 5}}}))  # fmt: skip
    rng = np.random.default_rng(7)
    z = np.stack([caffe_tiny.stripes(i % 2, rng, caffe_tiny.CROP) for i in range(48)])
    return {"tmp": tmp, "run": run, "weights": weights, "model": tmp / "net" / "deploy.prototxt",
            "z": z, "exp": exp}  # fmt: skip


def _seeded_published(tmp: Path, seed: int = 0) -> tuple[Path, Path]:
    """The published deploy net with Caffe's seeded fillers and random BatchNorm statistics
    and Scale parameters (a non-trivial stored scale factor, as a trained net has)."""
    import caffe

    model = ROOT / "prototxt" / "deploy.prototxt"
    caffe.set_mode_cpu()
    caffe.set_random_seed(seed)
    net = caffe.Net(str(model), caffe.TEST)
    rng = np.random.default_rng(seed)
    for name, layer in zip(net._layer_names, net.layers, strict=True):
        p = net.params.get(name)
        if layer.type == "BatchNorm":
            factor = 7.3
            n = p[0].data.shape[0]
            p[0].data[...] = rng.normal(0, 0.5, n) * factor
            p[1].data[...] = rng.uniform(0.2, 3.0, n) * factor
            p[2].data[...] = factor
        elif layer.type == "Scale":
            p[0].data[...] = rng.uniform(0.5, 1.5, p[0].data.shape)
            p[1].data[...] = rng.normal(0, 0.2, p[1].data.shape)
    weights = tmp / "published_seeded.caffemodel"
    net.save(str(weights))
    return model, weights


def test_pool_sizes_follow_caffe_ceil_rule(tmp_path):
    """Caffe's own output sizes (read from blobs) for odd sizes, padding and strides equal
    caffe_pool_size, and ONNX Runtime gives the same size for the converted net."""
    import caffe

    cases = [(53, 2, 2, 0, "CEIL"), (27, 2, 2, 0, "CEIL"), (13, 3, 2, 1, "CEIL"),
             (10, 3, 3, 1, "CEIL"), (7, 2, 2, 1, "CEIL"), (53, 2, 2, 0, "FLOOR"),
             (13, 3, 2, 1, "FLOOR")]  # fmt: skip
    for size, k, s, pad, mode in cases:
        model = tmp_path / f"pool_{size}_{k}_{s}_{pad}_{mode}.prototxt"
        model.write_text(
            'layer { name: "data" type: "Input" top: "data" '
            f"input_param {{ shape {{ dim: 1 dim: 1 dim: {size} dim: {size} }} }} }}\n"
            'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" '
            f"pooling_param {{ pool: MAX kernel_size: {k} stride: {s} pad: {pad} "
            f"round_mode: {mode} }} }}\n"
        )
        caffe_out = caffe.Net(str(model), caffe.TEST).blobs["pool"].data.shape[-1]
        assert ox.caffe_pool_size(size, k, s, pad, mode == "CEIL") == caffe_out
        g = ox.build_graph(load_net_param(model), {}, model)
        x = np.random.default_rng(0).normal(size=(2, size, size)).astype(np.float32)
        got = ox.run_batches(ox.session(ox.to_model(g, "pool")), x)[0]
        assert got.shape == (2, 1, caffe_out, caffe_out)
        net = caffe.Net(str(model), caffe.TEST)
        net.blobs["data"].reshape(2, 1, size, size)
        net.blobs["data"].data[...] = x[:, None]
        np.testing.assert_array_equal(net.forward()["pool"], got)
    assert ox.caffe_pool_size(53, 2, 2, 0) == 27  # the published net: 53 -> 27
    assert ox.caffe_pool_size(53, 2, 2, 0, ceil=False) == 26  # Table 1's FLOOR size


def test_tiny_trained_net_onnx_equals_caffe(tiny):
    """Trained tiny net (BatchNorm with learned running averages): ONNX Runtime vs pycaffe,
    folded and unfolded, within 1e-4 in P(sick) on 48 crops."""
    z = tiny["z"]
    p_caffe = _caffe_p(tiny["model"], tiny["weights"], z)
    assert p_caffe.min() < 0.3 and p_caffe.max() > 0.7  # the net learned something
    folded, report = ox.convert(tiny["model"], tiny["weights"], probe=z[:8])
    assert report["conv1"]["folded"] is True
    assert "BatchNormalization" not in {n.op_type for n in folded.graph.node}
    plain, _ = ox.convert(tiny["model"], tiny["weights"], probe=None)
    assert "BatchNormalization" in {n.op_type for n in plain.graph.node}
    for m in (folded, plain):
        assert np.max(np.abs(_onnx_p(m, z) - p_caffe)) <= TOL


@pytest.mark.slow  # about 25 s on the shared 2 cores: the full 220 px net, 8 fold trials
def test_published_deploy_net_onnx_equals_caffe_on_real_and_simulated_crops(
    tmp_path, real_frames_dir
):
    """The published deploy net (220 px input, ceil pooling 53 -> 27 -> 14) with seeded
    weights: real T98G crops and phase-like synthetic crops, P(sick) within 1e-4."""
    model, weights = _seeded_published(tmp_path)
    wins, _ = ox.check_windows([real_frames_dir], 220, 6)
    rng = np.random.default_rng(1)
    sim = np.stack([phase_like(rng, 256, 256).astype(np.float32) for _ in range(4)])
    z = ox.net_inputs(np.concatenate([wins, sim]), 220)
    onnx_model, report = ox.convert(model, weights, probe=z[:3])
    assert sum(r["folded"] for r in report.values()) == 8  # all eight convolutions
    p_caffe = _caffe_p(model, weights, z)
    assert np.ptp(p_caffe) > 1e-3  # inputs that the net tells apart
    assert np.max(np.abs(_onnx_p(onnx_model, z) - p_caffe)) <= TOL


def test_fold_is_refused_where_it_is_not_exact(tiny, tmp_path):
    """A BatchNorm that removes a large offset (mean 3e4) from a small spread (var 1e-3):
    Caffe's (y - mean) / sqrt(var + eps) in float32 loses digits that the folded bias does
    not, so the fold would not give Caffe's numbers; choose_folds keeps BatchNormalization."""
    import caffe

    param = load_net_param(tiny["model"])
    z = tiny["z"][:8]
    good = ox.choose_folds(param, ox.read_blobs(tiny["weights"]), tiny["model"],
                           tiny["weights"], z)[1]  # fmt: skip
    assert good["conv1"]["folded"] is True
    net = caffe.Net(str(tiny["model"]), str(tiny["weights"]), caffe.TEST)
    bn = net.params["bn1"]
    factor = float(bn[2].data[0])
    net.params["conv1"][1].data[...] += 3e4  # a large bias ...
    bn[0].data[...] = (bn[0].data / factor + 3e4) * factor
    bn[1].data[...] = 1e-3 * factor  # ... removed again, over a small variance
    bad = tmp_path / "bad.caffemodel"
    net.save(str(bad))
    folds, report = ox.choose_folds(param, ox.read_blobs(bad), tiny["model"], bad, z)
    assert report["conv1"]["folded"] is False and folds == set()
    assert report["conv1"]["layer_rel_diff"] > ox.FOLD_SHARE * ox.TOLERANCE


def test_unsupported_layer_is_one_sentence(tmp_path):
    model = tmp_path / "lrn.prototxt"
    model.write_text(
        'layer { name: "data" type: "Input" top: "data" '
        "input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }\n"
        'layer { name: "norm1" type: "LRN" bottom: "data" top: "norm1" }\n'
    )
    with pytest.raises(UserError, match=r"layer 'norm1' \(LRN\) has no ONNX conversion"):
        ox.build_graph(load_net_param(model), {}, model)


def test_export_cli_writes_onnx_and_a_bioimageio_package_that_passes(tiny, capsys):
    """deadnet export --onnx --bioimageio on check images; bioimageio.core's own test on the
    written package, run here again on the final folder."""
    from bioimageio.core import test_description

    rng = np.random.default_rng(3)
    imgs = tiny["tmp"] / "check"
    imgs.mkdir()
    for i in range(2):
        stack = np.stack([caffe_tiny.stripes((i + t) % 2, rng, 224) for t in range(2)])
        tifffile.imwrite(imgs / f"s{i}.tif", (3000 + 400 * stack).astype(np.uint16))
    out = tiny["tmp"] / "exported"
    rc = main(["export", "--onnx", "--bioimageio", "--weights", str(tiny["weights"]),
               "--model", str(tiny["model"]), "--out", str(out), "--check", str(imgs),
               "--crops", "30"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((out / "export.json").read_text())
    assert doc["agreement"]["crops"] == 30 and doc["agreement"]["max_abs_dp"] <= TOL
    assert doc["bioimageio"]["bioimageio_test"] == "passed"
    rows = (out / "agreement.csv").read_text().splitlines()
    assert len(rows) == 31
    summary = test_description(str(out / "bioimageio" / "rdf.yaml"))
    assert summary.status == "passed", summary.format()
    # the package's expected output is Caffe's, for its raw test window
    x = np.load(out / "bioimageio" / "test_input.npy")[0, 0]
    y = np.load(out / "bioimageio" / "test_output.npy")[0]
    p = DeployNet(tiny["model"], tiny["weights"]).probs(ox.net_inputs(x[None], 12))[0]
    np.testing.assert_allclose(y, p, atol=1e-7)


def test_package_then_verify_and_a_corrupted_caffemodel(tiny, tmp_path, capsys):
    out = tmp_path / "models" / "tiny_a"
    rc = main(["package", "--weights", str(tiny["weights"]), "--model", str(tiny["model"]),
               "--out", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    readme = (out / "readme.md").read_text()
    header = readme.split("---\n")[1]
    fields = dict(line.split(": ", 1) for line in header.strip().splitlines())
    assert fields["name"] == "tiny_a" and fields["caffemodel"] == "tiny_a.caffemodel"
    assert fields["sha1"] == hashlib.sha1((out / "tiny_a.caffemodel").read_bytes()).hexdigest()
    assert fields["license"] == "BSD-2-Clause" and fields["caffe_commit"] == "99bd997"
    assert fields["caffe_build"].startswith("caffe-")
    assert (out / "tiny_a.caffemodel").read_bytes() == tiny["weights"].read_bytes()
    card = json.loads((out / "card.json").read_text())
    ev = json.loads((tiny["run"] / "evaluation" / "evaluation.json").read_text())
    assert card["evaluation"]["accuracy"] == ev["accuracy"]
    assert f"{100 * ev['ci_low']:.1f} %" in readme and f"{100 * ev['ci_high']:.1f} %" in readme
    assert card["conditions"]["pixel_size_um"] == pytest.approx(0.3225)  # the manifest's
    assert "NA 0.75" in card["conditions"]["objective"] and card["conditions"]["simulated"]
    assert "- cell type: simulated U2OS" in readme
    assert (out / "solver.prototxt").read_text() == (tiny["run"] / "solver.prototxt").read_text()
    assert "## Solver" in readme and "solver_mode: CPU" in readme

    assert main(["verify", str(out)]) == 0
    data = bytearray((out / "tiny_a.caffemodel").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / "tiny_a.caffemodel").write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["verify", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tiny_a.caffemodel: sha1" in err[0] and "differs" in err[0]
