"""Caffe steps that can abort run first in an isolated child (deadnet_caffe/caffe_env.py).

The command-line cases (unknown layer type or bottom, ``describe --size 0 0``, ``--gpu 0``
without a GPU: one sentence, exit 2, no core file) are in tests/test_bad_inputs.py.
"""

from __future__ import annotations

import caffe_tiny
import pytest

from data_prep.core.errors import UserError
from deadnet_caffe import caffe_env


def test_abort_in_the_child_is_a_sentence_with_caffes_reason(tmp_path):
    net = tmp_path / "bad.prototxt"
    net.write_text(caffe_tiny.deploy().replace('bottom: "pool1"', 'bottom: "nowhere"'))
    with pytest.raises(UserError) as err:
        caffe_env.check_net_builds(net, "TEST")
    assert str(err.value).startswith(f"{net}: Caffe cannot build this net (")
    assert "Unknown bottom blob 'nowhere'" in str(err.value)


def test_nets_that_built_are_remembered_unless_they_read_files(tmp_path, monkeypatch):
    monkeypatch.setenv("DEADNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(caffe_env, "_NETS_BUILT", set())
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(caffe_tiny.deploy())
    caffe_env.check_net_builds(deploy, "TEST")
    assert len(list((tmp_path / "cache" / "nets-built").iterdir())) == 1
    ds = caffe_tiny.write_dataset(tmp_path / "ds", 8, 8)
    train_val = tmp_path / "train_val.prototxt"
    train_val.write_text(caffe_tiny.train_val().replace('"train.lmdb"', f'"{ds}/train.lmdb"'))
    train_val.write_text(train_val.read_text().replace('"test.lmdb"', f'"{ds}/test.lmdb"'))
    caffe_env.check_net_builds(train_val, "TEST")  # reads an LMDB: built in a child each time
    assert len(list((tmp_path / "cache" / "nets-built").iterdir())) == 1
    (ds / "test.lmdb" / "data.mdb").write_bytes(b"")  # now the same net cannot be built
    monkeypatch.setattr(caffe_env, "_NETS_BUILT", set())
    with pytest.raises(UserError, match="Caffe cannot build this net"):
        caffe_env.check_net_builds(train_val, "TEST")
