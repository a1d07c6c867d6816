"""Unit tests of the input checks (data_prep/core/checks.py, deadnet_caffe/checks.py) with known
answers: byte offsets, LMDB sizes from LMDB itself, layer lists read off the test nets."""

from __future__ import annotations

import argparse
import math
import struct

import bad_files as bf
import numpy as np
import pytest
import tifffile
from caffe_tiny import write_dataset
from data_experiment import make_experiment
from infer_nets import deadnet_deploy, write_net

from data_prep.core import datum
from data_prep.core.checks import (
    check_decoded_size,
    check_frames,
    check_image_file_end,
    check_tiff_header,
    read_text,
)
from data_prep.core.errors import UserError
from data_prep.core.manifest import read_manifest
from deadnet_caffe import checks
from deadnet_caffe.cli import main
from deadnet_caffe.train import _non_finite_loss

# --- text -----------------------------------------------------------------------------------


def test_read_text_drops_a_bom(tmp_path):
    (tmp_path / "m.csv").write_bytes(b"\xef\xbb\xbfplate,well\nP,\xc3\xa4\n")
    assert read_text(tmp_path / "m.csv", "manifest") == "plate,well\nP,\u00e4\n"


def test_read_text_names_the_first_non_utf8_byte(tmp_path):
    (tmp_path / "m.csv").write_bytes("plate\nPlatte-\u00e4\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"m\.csv: the manifest is not UTF-8 .*0xe4 at offset 13"):
        read_text(tmp_path / "m.csv", "manifest")


def test_read_text_refuses_binary_files(tmp_path):
    (tmp_path / "b").write_bytes(b"layer {\x00\x00}")
    with pytest.raises(UserError, match="binary file"):
        read_text(tmp_path / "b", "net prototxt")


def test_manifest_with_bom_reads_like_without(tmp_path):
    make_experiment(tmp_path)
    plain = read_manifest(tmp_path)
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(b"\xef\xbb\xbf" + manifest.read_bytes())
    assert read_manifest(tmp_path) == plain
    assert len(plain) == 7


def test_votes_with_bom_read_like_without(tmp_path):
    from data_prep.votes_csv import read_votes

    text = "item_id,annotator,label,overlap,created_at\nP/W0/p1@t0y0x0,J\u00fcrgen,sick,0,x\n"
    (tmp_path / "a.csv").write_text(text, encoding="utf-8")
    (tmp_path / "b.csv").write_text(text, encoding="utf-8-sig")
    votes = read_votes(tmp_path / "b.csv")
    assert votes == read_votes(tmp_path / "a.csv")
    assert [(v.annotator, v.label) for v in votes] == [("J\u00fcrgen", "sick")]


# --- TIFF headers and pixels ------------------------------------------------------------------


def test_tiff_header_of_a_good_stack(tmp_path):
    tifffile.imwrite(
        tmp_path / "s.tif", bf.texture((5, 300, 260)), imagej=True, metadata={"axes": "TYX"}
    )
    assert check_tiff_header(tmp_path / "s.tif") == ("TYX", (5, 300, 260))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (bf.corrupt_first_ifd, "not a readable TIFF"),
        (bf.huge_header, "200000 x 200000 pixels"),
        (bf.truncated_stack, "truncated"),
        (lambda p: bf.truncated_stack(p, imagej=False), "truncated"),
    ],
    ids=["corrupt-ifd", "huge-header", "truncated-imagej", "truncated-plain"],
)
def test_tiff_header_refuses(tmp_path, make, message):
    make(tmp_path / "x.tif")
    with pytest.raises(UserError, match=message):
        check_tiff_header(tmp_path / "x.tif")


def test_imagej_file_with_one_ifd(tmp_path):
    """ImageJ's files > 4 GB keep one IFD and all frames in one block: accepted when the
    block is all there, refused when the file is cut short."""
    stack = bf.texture((12, 300, 300))
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "TYX"})
    data = bytearray(path.read_bytes())
    ifd, n = struct.unpack("<I", data[4:8])[0], struct.unpack("<H", data[8 : 8 + 2])[0]
    assert ifd == 8
    data[ifd + 2 + 12 * n : ifd + 6 + 12 * n] = bytes(4)  # no next IFD
    path.write_bytes(bytes(data))
    assert check_tiff_header(path) == ("TYX", (12, 300, 300))
    path.write_bytes(bytes(data[: len(data) * 3 // 4]))
    with pytest.raises(UserError, match="truncated"):
        check_tiff_header(path)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp"])
def test_image_file_end(tmp_path, suffix):
    import cv2

    path = tmp_path / f"a{suffix}"
    assert cv2.imwrite(str(path), (bf.texture((64, 80)) // 20).astype(np.uint8))
    check_image_file_end(path)
    bf.truncate(path, 0.9)
    with pytest.raises(UserError, match="truncated"):
        check_image_file_end(path)


def test_decoded_size_limit_is_float32_bytes():
    check_decoded_size("x.tif", (10, 10), limit=400)  # 100 px x 4 bytes: exactly the limit
    with pytest.raises(UserError, match="10 x 10 pixels"):
        check_decoded_size("x.tif", (10, 10), limit=399)


def test_check_frames_names_the_bad_frame():
    frames = bf.texture((4, 30, 30)).astype(np.float32)
    check_frames("s.tif", frames)
    frames[2, 5, 5] = np.nan
    with pytest.raises(UserError, match=r"s.tif: frame 12 contains NaN"):
        check_frames("s.tif", frames, first=10)
    frames[2, 5, 5] = 7.0
    frames[3] = 7.0
    with pytest.raises(UserError, match=r"frame 3 is constant .every pixel is 7.0"):
        check_frames("s.tif", frames)


# --- numeric options --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (checks.positive_int, "3", 3),
        (checks.positive_int, "0", None),
        (checks.positive_int, "1.5", None),
        (checks.nonnegative_int, "0", 0),
        (checks.nonnegative_int, "-1", None),
        (checks.seed, "4294967295", 4294967295),
        (checks.seed, "4294967296", None),
        (checks.seed, "-1", None),
        (checks.finite_float, "-2.5", -2.5),
        (checks.finite_float, "nan", None),
        (checks.finite_float, "-inf", None),
        (checks.positive_float, "1e-4", 1e-4),
        (checks.positive_float, "0", None),
        (checks.nonnegative_float, "0", 0.0),
        (checks.nonnegative_float, "-0.1", None),
        (checks.probability, "1", 1.0),
        (checks.probability, "1.01", None),
        (checks.open_fraction, "0.25", 0.25),
        (checks.open_fraction, "1", None),
        (checks.open_fraction, "0", None),
    ],
)
def test_numeric_option_types(parse, text, value):
    if value is None:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)
    else:
        assert parse(text) == value


def test_option_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["describe", "x.prototxt", "--size", "0", "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("deadnet describe: argument --size: 0 is not a positive integer")


# --- prototxts and weights --------------------------------------------------------------------


def _net(text: str):
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    return text_format.Merge(text, caffe_pb2.NetParameter())


def test_net_param_good_deploy_passes():
    checks.check_net_param(_net(deadnet_deploy()), "d.prototxt")


def test_net_param_unknown_type():
    text = deadnet_deploy().replace('"Softmax"', '"SoftMax"')
    with pytest.raises(UserError, match="layer 'prob' has type 'SoftMax'"):
        checks.check_net_param(_net(text), "d.prototxt")


PHASED = """
layer { name: "a" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "t" type: "ReLU" bottom: "x" top: "only_train" include { phase: TRAIN } }
layer { name: "u" type: "ReLU" bottom: "only_train" top: "y" %s }
"""


def test_net_param_bottoms_per_phase():
    checks.check_net_param(_net(PHASED % "include { phase: TRAIN }"), "n")
    checks.check_net_param(_net(PHASED % "exclude { phase: TEST }"), "n")
    with pytest.raises(UserError, match=r"layer 'u' reads blob 'only_train'.* TEST phase"):
        checks.check_net_param(_net(PHASED % ""), "n")


def test_net_param_sizes():
    text = deadnet_deploy().replace("kernel_size: 9", "kernel_size: 0")
    with pytest.raises(UserError, match=r"layer 'conv_d1_1' has kernel_size \[0\]"):
        checks.check_net_param(_net(text), "d.prototxt")


def test_weights_complete_and_cut(tmp_path):
    model, weights = write_net(tmp_path)
    checks.check_weights(model, weights)
    bf.caffemodel_without(weights, tmp_path / "cut.caffemodel", "fc1")
    with pytest.raises(UserError, match=r"no weights for layer.s. fc1, fc2, score of"):
        checks.check_weights(model, tmp_path / "cut.caffemodel")
    bf.garbage(tmp_path / "g.caffemodel")
    with pytest.raises(UserError, match=r"g.caffemodel"):
        checks.check_weights(model, tmp_path / "g.caffemodel")


# --- LMDBs and caches ---------------------------------------------------------------------------


def test_lmdb_size_from_meta_pages_matches_lmdb(tmp_path):
    import lmdb

    write_dataset(tmp_path, 40, 6)
    env = lmdb.open(str(tmp_path / "train.lmdb"), readonly=True, lock=False)
    expected = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    env.close()
    assert datum.lmdb_required_size(tmp_path / "train.lmdb" / "data.mdb") == expected
    assert datum.check_lmdb(tmp_path / "train.lmdb") == (40, (1, 16, 16))


def test_lmdb_truncated_is_refused_without_mapping(tmp_path):
    write_dataset(tmp_path, 40, 6)
    bf.truncate(tmp_path / "train.lmdb" / "data.mdb", 0.5)
    with pytest.raises(UserError, match="the LMDB is truncated"):
        datum.check_lmdb(tmp_path / "train.lmdb")


def test_lmdb_datum_sizes_must_agree(tmp_path):
    from caffe.proto import caffe_pb2

    good = caffe_pb2.Datum(channels=1, height=4, width=4, float_data=[0.0] * 16)
    short = caffe_pb2.Datum(channels=1, height=4, width=4, float_data=[0.0] * 10)
    other = caffe_pb2.Datum(channels=1, height=2, width=2, float_data=[0.0] * 4)
    bf.lmdb_of(tmp_path / "a", [good.SerializeToString(), short.SerializeToString()])
    with pytest.raises(UserError, match="holds 10 values for a 1 x 4 x 4 Datum"):
        datum.check_lmdb(tmp_path / "a")
    bf.lmdb_of(tmp_path / "b", [good.SerializeToString(), other.SerializeToString()])
    with pytest.raises(UserError, match="records differ in size"):
        datum.check_lmdb(tmp_path / "b")


def test_load_npz(tmp_path):
    np.savez(tmp_path / "c.npz", alpha=np.arange(3.0), counts=np.array([1, 2]))
    got = checks.load_npz(tmp_path / "c.npz", ("alpha", "counts"))
    assert got["alpha"].tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(UserError, match="lacks beta"):
        checks.load_npz(tmp_path / "c.npz", ("alpha", "beta"))
    bf.garbage(tmp_path / "g.npz")
    with pytest.raises(UserError, match=r"not a readable .npz"):
        checks.load_npz(tmp_path / "g.npz", ("alpha",))


# --- training -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("I1201 solver.cpp:218] Iteration 20 (3.1 iter/s, 6.4s/20 iters), loss = nan", "nan"),
        ("I1201 solver.cpp:218] Iteration 0, loss = 0.693147", None),
        ("I1201 solver.cpp:397]     Test net output #1: loss = -inf (* 1 = -inf loss)", "-inf"),
        ("I1201 solver.cpp:397]     Test net output #0: accuracy = 1", None),
        ("I1201 solver.cpp:239]     Train net output #0: loss = inf (* 1 = inf loss)", "inf"),
    ],
)
def test_non_finite_loss_lines(line, value):
    assert _non_finite_loss(line) == value
    assert value is None or not math.isfinite(float(value))
