"""The published facts (shared/reference/released-settings.md) read from prototxt/ with Caffe's
own protobuf classes, and their agreement with data_prep/core/paper.py.

The literal numbers below are copied from released-settings.md, so this file checks the
prototxts and paper.py against the reference independently of either.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.core import paper
from data_prep.core.errors import UserError
from deadnet_caffe.netspec import (
    load_net_param,
    load_solver_param,
)
from deadnet_caffe.train import resolve_net, solver_net_file

PROTO = Path(__file__).resolve().parent.parent / "prototxt"
PUBLISHED = {"a": PROTO / "dataset_a", "b": PROTO / "dataset_b"}
ALL_PROTOTXT = sorted(PROTO.rglob("*.prototxt"))

# released-settings.md, "Convolutional part"
CONVS = [
    ("conv_d1_1", 16, 9, 0),
    ("conv_d1_2", 16, 3, 1),
    ("conv_d2_1", 32, 3, 1),
    ("conv_d2_2", 32, 3, 1),
    ("conv_d3_1", 64, 3, 1),
    ("conv_d3_2", 64, 3, 1),
    ("conv_d4_1", 128, 3, 1),
    ("conv_d4_2", 128, 3, 1),
]
POOLS = ["pool_d2_0", "pool_d3_0", "pool_d4_0", "pool_d5_0"]
# released-settings.md, "Solver (both data sets)"
SOLVER = {
    "type": "Nesterov",
    "lr_policy": "inv",
    "base_lr": 0.0003,
    "gamma": 1e-5,
    "power": 0.75,
    "momentum": 0.9,
    "max_iter": 1_000_000,
    "test_interval": 2000,
    "display": 200,
    "snapshot": 20000,
}
WEIGHT_DECAY = {"a": 0.0001, "b": 0.00001}
TEST_ITER = {"a": 20, "b": 5}


def layers_by_name(net):
    out = {}
    for layer in net.layer:
        out.setdefault(layer.name, []).append(layer)
    return out


def in_phase(layer, phase: int) -> bool:
    return not layer.include or any(r.phase == phase for r in layer.include)


@pytest.fixture(scope="module")
def pb2():
    from caffe.proto import caffe_pb2

    return caffe_pb2


def test_every_prototxt_parses():
    assert len(ALL_PROTOTXT) >= 19
    for path in ALL_PROTOTXT:
        if path.name.startswith("solver"):
            assert load_solver_param(path).net == "train_val.prototxt", path
        else:
            assert len(load_net_param(path).layer) > 30, path


@pytest.mark.parametrize("ds", ["a", "b"])
def test_published_solver(ds):
    s = load_solver_param(PUBLISHED[ds] / "solver.prototxt")
    for key, value in SOLVER.items():
        assert getattr(s, key) == pytest.approx(value), key
    assert s.weight_decay == pytest.approx(WEIGHT_DECAY[ds])
    assert list(s.test_iter) == [TEST_ITER[ds]]
    assert s.solver_mode == s.GPU  # published; the training runner derives a CPU solver
    # paper-text alternate: only the weight decay differs (section 2.4: 0.001)
    alt = load_solver_param(PUBLISHED[ds] / "solver_paper_weight_decay.prototxt")
    assert alt.weight_decay == pytest.approx(0.001)
    alt.weight_decay, alt.snapshot_prefix = s.weight_decay, s.snapshot_prefix
    assert alt == s


@pytest.mark.parametrize("ds", ["a", "b"])
def test_published_train_val_layers(ds, pb2):
    net = load_net_param(PUBLISHED[ds] / "train_val.prototxt")
    by_name = layers_by_name(net)
    # input, both phases
    data = by_name["data"]
    assert [d.include[0].phase for d in data] == [pb2.TRAIN, pb2.TEST]
    for d in data:
        assert d.type == "Data" and d.data_param.backend == pb2.DataParameter.LMDB
        assert d.data_param.batch_size == 20
        t = d.transform_param
        assert (t.crop_size, list(t.mean_value), t.scale) == (220, [32767], pytest.approx(0.00025))
        assert t.mirror == (ds == "b" and d.include[0].phase == pb2.TRAIN)
    assert [d.data_param.source for d in data] == ["train.lmdb", "test.lmdb"]
    # convolutions, each followed in place by BatchNorm, Scale, ReLU
    order = [layer.name for layer in net.layer]
    for name, nout, kernel, pad in CONVS:
        (conv,) = by_name[name]
        p = conv.convolution_param
        assert (conv.type, p.num_output, list(p.kernel_size), list(p.pad)) == (
            "Convolution",
            nout,
            [kernel],
            [pad],
        )
        assert list(p.stride) == [1]
        assert (p.weight_filler.type, p.bias_filler.type, p.bias_filler.value) == (
            "xavier",
            "constant",
            0,
        )
        assert [(s.lr_mult, s.decay_mult) for s in conv.param] == [(1, 1), (2, 0)]
        i = order.index(name)
        bn, scale, relu = net.layer[i + 1 : i + 4]
        assert (bn.type, scale.type, relu.type) == ("BatchNorm", "Scale", "ReLU")
        assert all(list(x.bottom) == list(x.top) == [name] for x in (bn, scale, relu))
        assert [(s.lr_mult, s.decay_mult) for s in bn.param] == [(0, 0)] * 3
        assert bn.batch_norm_param.HasField("use_global_stats")
        assert bn.batch_norm_param.use_global_stats is False  # in val too, as published
        assert bn.batch_norm_param.moving_average_fraction == pytest.approx(0.95)
        assert scale.scale_param.bias_term is True
    for name in POOLS:
        (pool,) = by_name[name]
        p = pool.pooling_param
        assert (pool.type, p.pool, p.kernel_size, p.stride) == ("Pooling", p.MAX, 2, 2)
        assert not p.HasField("round_mode")  # Caffe's default CEIL
    # classifier
    for name, nout in [("fc1", 512), ("fc2", 512), ("score", 2)]:
        (fc,) = by_name[name]
        p = fc.inner_product_param
        assert (fc.type, p.num_output, p.weight_filler.type, p.bias_filler.type) == (
            "InnerProduct",
            nout,
            "xavier",
            "constant",
        )
    for name in ("fc1", "fc2"):
        (drop,) = by_name[f"drop_{name}"]
        assert drop.dropout_param.dropout_ratio == pytest.approx(0.5)
        assert [r.phase for r in drop.include] == [pb2.TRAIN]
        assert by_name[f"relu_{name}"][0].type == "ReLU"
    assert not any(layer.type == "BatchNorm" and "fc" in layer.bottom[0] for layer in net.layer)
    for phase in (pb2.TRAIN, pb2.TEST):
        types = {layer.type for layer in net.layer if in_phase(layer, phase)}
        assert {"SoftmaxWithLoss", "Accuracy"} <= types
    assert [layer.type for layer in net.layer].count("Convolution") == 8
    assert [layer.type for layer in net.layer].count("Pooling") == 4


def test_paper_constants_agree_with_reference():
    assert [c[:4] for c in paper.CONV_LAYERS] == CONVS
    assert list(paper.POOL_LAYERS) == POOLS
    assert paper.FC_LAYERS == (("fc1", 512), ("fc2", 512), ("score", 2))
    assert (
        SOLVER["base_lr"],
        SOLVER["gamma"],
        SOLVER["power"],
        SOLVER["momentum"],
    ) == (paper.BASE_LR, paper.LR_GAMMA, paper.LR_POWER, paper.MOMENTUM)
    assert (SOLVER["type"], SOLVER["lr_policy"]) == (paper.SOLVER_TYPE, paper.LR_POLICY)
    assert (paper.MAX_ITER, paper.TEST_INTERVAL, paper.DISPLAY, paper.SNAPSHOT) == (
        1_000_000,
        2000,
        200,
        20000,
    )
    assert (WEIGHT_DECAY["a"], WEIGHT_DECAY["b"]) == (paper.WEIGHT_DECAY_A, paper.WEIGHT_DECAY_B)
    assert (TEST_ITER["a"], TEST_ITER["b"]) == (paper.TEST_ITER_A, paper.TEST_ITER_B)
    assert (paper.BATCH_SIZE, paper.NET_INPUT_PX) == (20, 220)
    assert (paper.DATA_MEAN_VALUE, paper.DATA_SCALE) == (32767, 0.00025)
    assert paper.BN_MOVING_AVERAGE_FRACTION == 0.95 and paper.DROPOUT_RATIO == 0.5
    assert paper.FCN_STRIDE_PX == 16


def test_every_prototxt_agrees_with_paper_py():
    """Every net and solver in prototxt/ repeats the numbers of data_prep/core/paper.py."""
    convs = {c[0]: c[1:] for c in paper.CONV_LAYERS}
    fcs = dict(paper.FC_LAYERS)
    for path in ALL_PROTOTXT:
        if path.name.startswith("solver"):
            s = load_solver_param(path)
            ds = path.parent.name[-1]
            wd = {"a": paper.WEIGHT_DECAY_A, "b": paper.WEIGHT_DECAY_B}[ds]
            if "paper_weight_decay" in path.name:
                wd = paper.WEIGHT_DECAY_PAPER
            assert s.weight_decay == pytest.approx(wd), path
            assert s.base_lr == pytest.approx(paper.BASE_LR) and s.type == paper.SOLVER_TYPE
            assert s.max_iter == paper.MAX_ITER, path
            assert list(s.test_iter) == [{"a": paper.TEST_ITER_A, "b": paper.TEST_ITER_B}[ds]]
            continue
        for layer in load_net_param(path).layer:
            if layer.type == "Convolution" and layer.name in convs:
                p = layer.convolution_param
                nout, k, pad = convs[layer.name]
                assert (p.num_output, p.kernel_size[0], p.pad[0]) == (nout, k, pad), path
                assert p.weight_filler.type == paper.WEIGHT_FILLER
                assert tuple(s.lr_mult for s in layer.param) == paper.PARAM_LR_MULT
            elif layer.type == "InnerProduct":
                assert layer.inner_product_param.num_output == fcs[layer.name], path
            elif layer.type == "Pooling":
                assert layer.pooling_param.kernel_size == paper.POOL_KERNEL
                assert layer.pooling_param.stride == paper.POOL_STRIDE
                floor = layer.pooling_param.round_mode == layer.pooling_param.FLOOR
                assert floor == ("table1_floor" in path.parts), path
            elif layer.type == "BatchNorm":
                bp = layer.batch_norm_param
                assert bp.moving_average_fraction == pytest.approx(paper.BN_MOVING_AVERAGE_FRACTION)
                assert bp.use_global_stats == path.name.startswith("deploy"), path
            elif layer.type == "Data":
                t = layer.transform_param
                assert (t.crop_size, t.mean_value[0]) == (paper.NET_INPUT_PX, paper.DATA_MEAN_VALUE)
                assert t.scale == pytest.approx(paper.DATA_SCALE)
                assert layer.data_param.batch_size == paper.BATCH_SIZE
            elif layer.type == "Dropout":
                assert layer.dropout_param.dropout_ratio == pytest.approx(paper.DROPOUT_RATIO)


def test_deploy_nets_settings():
    for path in PROTO.rglob("deploy*.prototxt"):
        net = load_net_param(path)
        assert net.force_backward, path
        types = [layer.type for layer in net.layer]
        assert types[0] == "Input" and types[-1] == "Softmax", path
        assert net.layer[-1].top == ["prob"]
        assert not {"Dropout", "SoftmaxWithLoss", "Accuracy", "Data"} & set(types), path
        assert list(net.layer[0].input_param.shape[0].dim[:2]) == [1, 1]


def test_paper_bn_fc_variant_adds_bn_on_fc1_fc2_only():
    for path in (PROTO / "paper_bn_fc").rglob("*.prototxt"):
        if path.name.startswith("solver"):
            continue
        net = load_net_param(path)
        bn_on = [layer.bottom[0] for layer in net.layer if layer.type == "BatchNorm"]
        assert bn_on == [c[0] for c in CONVS] + ["fc1", "fc2"], path


def test_variants_differ_from_published_only_where_named():
    """table1_floor and paper_bn_fc train_val nets equal the published ones but for their change."""
    for ds in ("a", "b"):
        pub = load_net_param(PUBLISHED[ds] / "train_val.prototxt")
        floor = load_net_param(PROTO / "table1_floor" / f"dataset_{ds}" / "train_val.prototxt")
        for layer in floor.layer:
            if layer.type == "Pooling":
                layer.pooling_param.ClearField("round_mode")
        floor.name = pub.name
        assert floor == pub
        sol = load_solver_param(PUBLISHED[ds] / "solver.prototxt")
        for variant in ("table1_floor", "paper_bn_fc"):
            alt = load_solver_param(PROTO / variant / f"dataset_{ds}" / "solver.prototxt")
            alt.snapshot_prefix = sol.snapshot_prefix
            assert alt == sol


def test_resolve_net_points_data_layers_at_the_dataset(tmp_path):
    """The training runner's resolver (the one the product uses): each published Data layer
    reads its split of the data set, and stored crops smaller than crop_size are refused."""
    net = load_net_param(PUBLISHED["a"] / "train_val.prototxt")
    shapes = {s: (3, (1, 256, 256)) for s in ("train.lmdb", "test.lmdb")}
    out = resolve_net(net, tmp_path, shapes, PUBLISHED["a"], None)
    sources = [layer.data_param.source for layer in out.layer if layer.type == "Data"]
    assert sources == [str((tmp_path / s).resolve()) for s in ("train.lmdb", "test.lmdb")]
    small = {s: (3, (1, 200, 200)) for s in ("train.lmdb", "test.lmdb")}
    fresh = load_net_param(PUBLISHED["a"] / "train_val.prototxt")
    with pytest.raises(UserError, match="200 px crops, smaller than the crop_size 220"):
        resolve_net(fresh, tmp_path, small, PUBLISHED["a"], None)


def test_solver_net_file_is_beside_the_solver():
    path = PUBLISHED["b"] / "solver.prototxt"
    s = load_solver_param(path)
    assert solver_net_file(path, s.net) == PUBLISHED["b"] / "train_val.prototxt"


def test_bad_prototxt_is_one_sentence(tmp_path):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('layer { name: "x" typo: 3 }\n')
    with pytest.raises(UserError, match=r"bad\.prototxt: not a valid Caffe net prototxt"):
        load_net_param(bad)
    with pytest.raises(UserError, match=r"missing\.prototxt: cannot read"):
        load_solver_param(tmp_path / "missing.prototxt")
