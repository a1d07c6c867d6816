"""Every net of prototxt/ built by real Caffe: blob shapes, parameter counts, deploy versus the
published TEST net, the fully convolutional nets and their net surgery, `deadnet describe`.

FCN exactness (docs/FAITHFULNESS.md, "FCN"): window (i, j) of a fully convolutional net on an
input of 220 + 16 k px sees input pixels [16 i, 16 i + 220) x [16 j, 16 j + 220). It equals the
crop-wise deploy net on that crop exactly when (1) the poolings round down (the Table 1 FLOOR
variant; with CEIL, the published 53 -> 27 and 27 -> 14 poolings add a half-empty window at the
crop's edge that the FCN fills with the neighbouring pixels) and (2) the 3x3 convolutions' zero
padding has no effect, which these tests arrange with centre-tap-only 3x3 kernels. With full
3x3 kernels the crop-wise net sees zeros at the crop border where the FCN sees neighbours,
so trained nets agree only approximately (the tests check that they do differ).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import lmdb
import numpy as np
import pytest

from data_prep.core import paper
from data_prep.core.errors import UserError
from deadnet_caffe.cli import main as cli_main
from deadnet_caffe.describe import describe_net, format_table
from deadnet_caffe.netspec import (
    check_weights,
    load_net,
    load_net_param,
    net_from_param,
)
from deadnet_caffe.surgery import transplant_fcn
from deadnet_caffe.train import check_dataset, resolve_net, solver_net_file

PROTO = Path(__file__).resolve().parent.parent / "prototxt"
TRAIN_VALS = sorted(PROTO.rglob("train_val.prototxt"))
DEPLOYS = sorted(PROTO.rglob("deploy*.prototxt"))
STORED_PX = 256  # stored crop side (paper 2.3 step c)


@pytest.fixture(scope="module")
def caffe():
    from deadnet_caffe.caffe_env import set_device

    return set_device(None)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    """train.lmdb and test.lmdb with three 1 x 256 x 256 float Datums each (v = 32767 + 4000 z)."""
    from caffe.proto import caffe_pb2

    out = tmp_path_factory.mktemp("dataset")
    rng = np.random.default_rng(0)
    for name in ("train.lmdb", "test.lmdb"):
        env = lmdb.open(str(out / name), map_size=1 << 24)
        with env.begin(write=True) as txn:
            for i in range(3):
                z = rng.standard_normal((1, STORED_PX, STORED_PX)).astype(np.float32)
                d = caffe_pb2.Datum(channels=1, height=STORED_PX, width=STORED_PX, label=i % 2)
                d.float_data.extend((paper.DATA_MEAN_VALUE + paper.DATUM_Z_SCALE * z).ravel())
                txn.put(f"{i:08d}".encode(), d.SerializeToString())
        env.close()
    return out


def sides(net) -> list[int]:
    """Spatial sides of the conv/pool blobs, in net order, one per distinct blob."""
    return [b.data.shape[2] for name, b in net.blobs.items() if name.startswith(("conv", "pool"))]


def independent_param_count(fc1_side: int, bn_fc: bool = False) -> tuple[int, int]:
    """(learned parameters, BatchNorm statistics) from Table 1 by hand."""
    convs = [(1, 16, 9), (16, 16, 3), (16, 32, 3), (32, 32, 3)]
    convs += [(32, 64, 3), (64, 64, 3), (64, 128, 3), (128, 128, 3)]
    learned = sum(k * k * cin * cout + cout for cin, cout, k in convs)
    learned += sum(2 * cout for _, cout, _ in convs)  # Scale: scale and shift
    stats = sum(2 * cout + 1 for _, cout, _ in convs)  # mean, variance, factor
    learned += (fc1_side * fc1_side * 128 + 1) * 512 + (512 + 1) * 512 + (512 + 1) * 2
    if bn_fc:
        learned += 2 * (2 * 512)
        stats += 2 * (2 * 512 + 1)
    return learned, stats


def randomise(net, rng, centre_taps: bool = False) -> None:
    """Random weights and BatchNorm statistics; optionally keep only 3x3 kernels' centre taps."""
    for name, blobs in net.params.items():
        if name.startswith("bn_"):
            blobs[0].data[...] = rng.normal(0, 0.1, blobs[0].data.shape)
            blobs[1].data[...] = rng.uniform(0.5, 2.0, blobs[1].data.shape)
            blobs[2].data[...] = 1.0
        elif name.startswith("scale_"):
            blobs[0].data[...] = rng.uniform(0.5, 1.5, blobs[0].data.shape)
            blobs[1].data[...] = rng.normal(0, 0.1, blobs[1].data.shape)
        else:
            blobs[1].data[...] = rng.normal(0, 0.05, blobs[1].data.shape)
            w = blobs[0].data
            if centre_taps and w.ndim == 4 and w.shape[2:] == (3, 3):
                keep = w[:, :, 1, 1].copy()
                w[...] = 0
                w[:, :, 1, 1] = keep * 3  # keep the Xavier scale of the 9 taps
    return None


# --- every net builds, with the published and Table 1 blob sizes -------------------------


def resolved(net_param, dataset_dir: Path, where: Path):
    """The net's Data layers pointed at ``dataset_dir`` by the training runner's resolver."""
    return resolve_net(net_param, dataset_dir, check_dataset(dataset_dir), where, None)


def small_batch(net_param, batch: int = 2):
    """Copy with the Data layers' batch_size (published 20, test_prototxt.py) set to ``batch``."""
    out = type(net_param)()
    out.CopyFrom(net_param)
    for layer in out.layer:
        if layer.type == "Data":
            assert layer.data_param.batch_size == paper.BATCH_SIZE
            layer.data_param.batch_size = batch
    return out


@pytest.mark.parametrize("path", TRAIN_VALS, ids=lambda p: str(p.relative_to(PROTO)))
def test_train_val_builds_in_both_phases(path, caffe, dataset_dir):
    param = small_batch(resolved(load_net_param(path), dataset_dir, path))
    floor = "table1_floor" in path.parts
    expect = list(paper.BLOB_SIDES_TABLE1 if floor else paper.BLOB_SIDES_PUBLISHED)
    published = path.parent.parent == PROTO
    for phase in ("TRAIN", "TEST"):
        net = net_from_param(param, phase)
        assert net.blobs["data"].data.shape == (2, 1, 220, 220)
        assert net.blobs["label"].data.shape == (2,)
        e1, e2, e3, e4 = expect[1:]
        assert sides(net) == [212, 212, e1, 106, 106, e2, 53, 53, e3, e3, e3, e4]
        learned, stats = independent_param_count(expect[4], "paper_bn_fc" in path.parts)
        n_learned = sum(
            b.data.size for n, bs in net.params.items() if not n.startswith("bn_") for b in bs
        )
        n_stats = sum(b.data.size for n, bs in net.params.items() for b in bs) - n_learned
        assert (n_learned, n_stats) == (learned, stats)
        has_dropout = any(layer.type == "Dropout" for layer in net.layers)
        assert has_dropout == (phase == "TRAIN")
        assert {"loss", "accuracy"} <= set(net.outputs)
        if published:  # reads the tiny LMDB through the published transform
            out = net.forward()
            assert np.isfinite(out["loss"]) and 0 <= out["accuracy"] <= 1
            x = net.blobs["data"].data
            assert x.shape == (2, 1, 220, 220) and abs(x.std() - 1) < 0.05  # (v - 32767) * 0.00025


@pytest.mark.parametrize("path", DEPLOYS, ids=lambda p: str(p.relative_to(PROTO)))
def test_deploy_builds(path, caffe):
    net = load_net(path)
    floor = "table1_floor" in path.parts
    side = net.blobs["data"].data.shape[2]
    if "fcn" in path.name:
        windows = 1 + (side - 220) // paper.FCN_STRIDE_PX
        assert net.blobs["prob"].data.shape == (1, 2, windows, windows)
        assert net.blobs["fc1_conv"].data.shape[1] == 512
    else:
        expect = paper.BLOB_SIDES_TABLE1 if floor else paper.BLOB_SIDES_PUBLISHED
        assert side == 220
        assert [net.blobs[p].data.shape[2] for p in paper.POOL_LAYERS] == list(expect[1:])
        assert net.blobs["pool_d5_0"].data.shape[1:] == (128, expect[4], expect[4])
        assert net.blobs["prob"].data.shape == (1, 2)
        learned, stats = independent_param_count(expect[4], "paper_bn_fc" in path.parts)
        desc = describe_net(path)
        assert (desc.learned_params, desc.statistics) == (learned, stats)


def test_solvers_build(caffe, dataset_dir, tmp_path):
    """The published solver builds its train and test nets once paths are resolved."""
    from deadnet_caffe.netspec import load_solver_param, save_param

    path = PROTO / "dataset_b" / "solver.prototxt"
    s = load_solver_param(path)
    net_path = solver_net_file(path, s.net)
    net = small_batch(resolved(load_net_param(net_path), dataset_dir, net_path))
    s.net = str(save_param(net, tmp_path / "train_val.prototxt"))
    s.solver_mode = s.CPU
    solver = caffe.get_solver(str(save_param(s, tmp_path / "solver.prototxt")))
    assert solver.net.blobs["data"].data.shape == (2, 1, 220, 220)
    assert solver.test_nets[0].blobs["data"].data.shape == (2, 1, 220, 220)
    assert len(solver.test_nets) == 1


# --- deploy == published TEST net with global statistics ---------------------------------


@pytest.mark.parametrize(
    "variant", ["", "table1_floor", pytest.param("paper_bn_fc", marks=pytest.mark.slow)]
)
def test_deploy_equals_test_net_with_global_stats(variant, caffe, dataset_dir, tmp_path, rng):
    base = PROTO / variant if variant else PROTO
    tv_path = base / "dataset_a" / "train_val.prototxt"
    tv = resolved(load_net_param(tv_path), dataset_dir, tv_path)
    test_net = net_from_param(tv, "TEST")
    randomise(test_net, rng)
    weights = tmp_path / "w.caffemodel"
    test_net.save(str(weights))
    for layer in tv.layer:
        if layer.type == "BatchNorm":
            layer.batch_norm_param.use_global_stats = True
    global_net = net_from_param(tv, "TEST", weights)
    deploy = load_net(base / "deploy.prototxt", "TEST", weights)
    x = rng.standard_normal((2, 1, 220, 220)).astype(np.float32)
    scores = []
    for net in (global_net, test_net, deploy):
        net.blobs["data"].reshape(*x.shape)
        if "label" in net.blobs:
            net.blobs["label"].reshape(len(x))
        net.reshape()
        net.blobs["data"].data[...] = x
        net.forward(start="conv_d1_1", end="score")
        scores.append(net.blobs["score"].data.copy())
    np.testing.assert_allclose(scores[2], scores[0], rtol=1e-5, atol=1e-5)
    # as published (batch statistics in val) the same weights give other scores
    assert not np.allclose(scores[1], scores[0], atol=1e-3)
    deploy.forward()
    p = deploy.blobs["prob"].data
    e = np.exp(scores[0] - scores[0].max(1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)


# --- fully convolutional nets and net surgery -------------------------------------------


def _fcn_vs_crops(deploy_path, fcn_path, rng, tmp_path, centre_taps, k=1):
    deploy = load_net(deploy_path)
    randomise(deploy, rng, centre_taps)
    weights = tmp_path / "deploy.caffemodel"
    deploy.save(str(weights))
    fcn = load_net(fcn_path, "TEST")
    transplant_fcn(load_net(deploy_path, "TEST", weights), fcn)
    side = 220 + paper.FCN_STRIDE_PX * k
    img = rng.standard_normal((side, side)).astype(np.float32)
    fcn.blobs["data"].reshape(1, 1, side, side)
    fcn.reshape()
    fcn.blobs["data"].data[0, 0] = img
    fcn.forward()
    dense = fcn.blobs["score_conv"].data[0].copy()  # (2, k + 1, k + 1)
    s = paper.FCN_STRIDE_PX
    crops = np.stack(
        [img[s * i : s * i + 220, s * j : s * j + 220] for i in range(k + 1) for j in range(k + 1)]
    )[:, None]
    deploy.blobs["data"].reshape(*crops.shape)
    deploy.reshape()
    deploy.blobs["data"].data[...] = crops
    deploy.forward()
    crop_wise = deploy.blobs["score"].data.T.reshape(2, k + 1, k + 1)
    return dense, crop_wise, fcn


def test_fcn_exact_for_floor_variant_with_centre_taps(caffe, rng, tmp_path):
    """Table 1 FLOOR variant, windows at multiples of 16 px, padding without effect: exact."""
    dense, crop_wise, fcn = _fcn_vs_crops(
        PROTO / "table1_floor" / "deploy.prototxt",
        PROTO / "table1_floor" / "deploy_fcn.prototxt",
        rng,
        tmp_path,
        centre_taps=True,
    )
    assert dense.shape == (2, 2, 2)  # windows at 0 and 16 px on both axes
    np.testing.assert_allclose(dense, crop_wise, atol=1e-4, rtol=1e-4)
    p = fcn.blobs["prob"].data[0]
    e = np.exp(crop_wise - crop_wise.max(0))
    np.testing.assert_allclose(p, e / e.sum(0), atol=1e-4)


@pytest.mark.slow
def test_fcn_not_exact_with_ceil_or_padding(caffe, rng, tmp_path):
    """The published CEIL net, and full 3x3 kernels, differ from the crop-wise net off (0, 0)."""
    ceil = _fcn_vs_crops(
        PROTO / "deploy.prototxt", PROTO / "deploy_fcn.prototxt", rng, tmp_path, True
    )
    padded = _fcn_vs_crops(
        PROTO / "table1_floor" / "deploy.prototxt",
        PROTO / "table1_floor" / "deploy_fcn.prototxt",
        rng,
        tmp_path,
        False,
    )
    for dense, crop_wise, _ in (ceil, padded):
        assert np.abs(dense - crop_wise).max() > 1e-3


def test_fcn_single_window_equals_deploy(caffe, rng, tmp_path):
    """On a 220 px input the FCN has one window, which is the crop: exact for any weights."""
    dense, crop_wise, _ = _fcn_vs_crops(
        PROTO / "deploy.prototxt", PROTO / "deploy_fcn.prototxt", rng, tmp_path, False, k=0
    )
    assert dense.shape == (2, 1, 1)
    np.testing.assert_allclose(dense, crop_wise, atol=1e-4, rtol=1e-4)


def test_surgery_reshapes_fc_weights(caffe, rng):
    deploy = load_net(PROTO / "deploy.prototxt")
    randomise(deploy, rng)
    fcn = load_net(PROTO / "deploy_fcn.prototxt")
    transplant_fcn(deploy, fcn)
    w = fcn.params["fc1_conv"][0].data
    assert w.shape == (512, 128, 14, 14)
    # InnerProduct flattens (C, H, W): input (c, y, x) is column c * 196 + y * 14 + x
    assert w[7, 3, 5, 11] == deploy.params["fc1"][0].data[7, 3 * 196 + 5 * 14 + 11]
    assert np.array_equal(
        fcn.params["score_conv"][0].data[:, :, 0, 0], deploy.params["score"][0].data
    )
    assert np.array_equal(fcn.params["bn_d4_2"][1].data, deploy.params["bn_d4_2"][1].data)
    floor_fcn = load_net(PROTO / "table1_floor" / "deploy_fcn.prototxt")
    with pytest.raises(UserError, match=r"fc1.*same variant"):
        transplant_fcn(deploy, floor_fcn)


def test_check_weights_rejects_other_variant(caffe, rng, tmp_path):
    deploy = load_net(PROTO / "deploy.prototxt")
    weights = tmp_path / "pub.caffemodel"
    deploy.save(str(weights))
    check_weights(PROTO / "deploy.prototxt", weights)
    with pytest.raises(UserError, match=r"layer 'fc1' has shape .*wrong net variant"):
        check_weights(PROTO / "table1_floor" / "deploy.prototxt", weights)
    (tmp_path / "junk.caffemodel").write_bytes(b"\xff\xff\xff")
    with pytest.raises(UserError, match=r"not a Caffe \.caffemodel"):
        check_weights(PROTO / "deploy.prototxt", tmp_path / "junk.caffemodel")


# --- deadnet describe --------------------------------------------------------------------


def test_describe_table1(caffe, capsys):
    assert cli_main(["describe", str(PROTO / "table1_floor" / "deploy.prototxt")]) == 0
    out = capsys.readouterr().out
    assert "53x53x64    26x26x64" in out and "13x13x128" in out
    desc = describe_net(PROTO / "table1_floor" / "deploy.prototxt")
    fc1 = desc.row("fc1")
    assert (fc1.shape_in, fc1.kernel) == ((1, 128, 13, 13), "13x13x128")
    assert desc.row("conv_d1_1").kernel == "9x9x1, 1"
    # conv FLOPs by hand: 2 * k * k * C_in * C_out * H * W + bias
    assert desc.row("conv_d1_1").flops == 2 * 81 * 16 * 212 * 212 + 16 * 212 * 212
    assert desc.row("fc1").flops == 2 * 13 * 13 * 128 * 512 + 512
    macs = sum(r.flops for r in desc.rows if r.type in ("Convolution", "InnerProduct"))
    assert desc.flops > macs > 1.2e9


def test_describe_train_val_without_lmdb_and_fcn_size(caffe):
    desc = describe_net(PROTO / "dataset_a" / "train_val.prototxt", "TRAIN")
    assert desc.row("pool_d5_0").shape_out == (1, 128, 14, 14)
    assert desc.row("drop_fc1").type == "Dropout"
    desc = describe_net(PROTO / "deploy_fcn.prototxt", size=(220 + 16 * 3, 220 + 16 * 5))
    assert desc.row("prob").shape_out == (1, 2, 4, 6)
    assert desc.learned_params == independent_param_count(14)[0]
    assert math.prod(desc.row("fc1_conv").shape_out) == 512 * 4 * 6


def test_describe_bad_file_exit_2(tmp_path, capsys):
    assert cli_main(["describe", str(tmp_path / "nope.prototxt")]) == 2
    assert "nope.prototxt: cannot read" in capsys.readouterr().err


# paper Table 1, verbatim: layer, size in, size out, kernel and stride
TABLE1 = """\
Conv1.1	220x220x1	212x212x16	9x9x1, 1
Conv1.2	212x212x16	212x212x16	3x3x16, 1
MaxPool.1	212x212x16	106x106x16	2x2x1, 2
Conv2.1	106x106x16	106x106x32	3x3x16, 1
Conv2.2	106x106x32	106x106x32	3x3x32, 1
MaxPool.2	106x106x32	53x53x32	2x2x1, 2
Conv3.1	53x53x32	53x53x64	3x3x32, 1
Conv3.2	53x53x64	53x53x64	3x3x64, 1
MaxPool.3	53x53x64	26x26x64	2x2x1, 2
Conv4.1	26x26x64	26x26x128	3x3x64, 1
Conv4.2	26x26x128	26x26x128	3x3x128, 1
MaxPool.4	26x26x128	13x13x128	2x2x1, 2
fc.1	13x13x128	1x1x512	13x13x128
fc.2	1x1x512	1x1x512	1x1x512
score	1x1x512	1x1x2	1x1x512"""


def test_describe_reproduces_table1_for_floor_variant(caffe):
    table = format_table(describe_net(PROTO / "table1_floor" / "deploy.prototxt"))
    rows = []
    for line in table.splitlines()[2:17]:
        _name, t1, _type, size_in, size_out, kernel = re.split(r"\s{2,}", line.strip())[:6]
        rows.append("\t".join((t1, size_in, size_out, kernel.removesuffix(" floor"))))
    assert "\n".join(rows) == TABLE1
