"""The annotation web app (paper section 2.2): pool, API, rules and security on real SQLite."""

from __future__ import annotations

import io
import re
import sqlite3

import numpy as np
import pytest
from annotate_helpers import (
    SMALL_ITEMS,
    Client,
    dump,
    large_experiment,
    serve_in_thread,
    small_experiment,
)
from PIL import Image

from data_prep.annotate import db
from data_prep.annotate.pool import build_pool, stretch_to_uint8
from data_prep.annotate.server import make_server
from data_prep.core.errors import UserError
from data_prep.votes_csv import read_votes
from deadnet_caffe.cli import main


@pytest.fixture
def experiment(tmp_path):
    return small_experiment(tmp_path / "exp")


@pytest.fixture
def app(tmp_path, experiment):
    """A running server on the small experiment, with annotators alice and bob."""
    url = f"sqlite:///{tmp_path / 'votes.sqlite'}"
    server = make_server(experiment, url, "127.0.0.1", 0, 80.0)
    serve_in_thread(server)
    tokens = {name: db.add_annotator(server.engine, name) for name in ("alice", "bob")}
    yield server, tokens, tmp_path / "votes.sqlite"
    server.shutdown()
    server.server_close()


def small_item_frames(item_id: str) -> np.ndarray:
    """The raw (10, 256, 256) crop of a SMALL_ITEMS item, from small_experiment's recipe:
    A1 frame t is 1000 t + column index, A2 is constant 7."""
    assert item_id in SMALL_ITEMS
    if item_id.startswith("plate1/A2/"):
        return np.full((10, 256, 256), 7, np.uint16)
    t0, x0 = (int(v) for v in re.fullmatch(r".*@t(\d+)y0x(\d+)", item_id).groups())
    cols = np.arange(x0, x0 + 256)
    return np.stack([np.broadcast_to(cols + 1000 * t, (256, 256)) for t in range(t0, t0 + 10)])


def test_pool_items_and_dose_limit(experiment):
    assert tuple(p.id for p in build_pool(experiment)) == SMALL_ITEMS
    assert [p.id for p in build_pool(experiment, max_dose_s=40.0)] == list(SMALL_ITEMS[:4])
    assert {p.dose_s for p in build_pool(experiment)} == {0.0, 80.0}


def test_pool_without_items_is_a_user_error(experiment):
    # Up to 10 s only A1 qualifies; without it no position has items.
    lines = (experiment / "manifest.csv").read_text().splitlines()
    (experiment / "manifest.csv").write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    with pytest.raises(UserError, match="no position with dose <= 10 s"):
        build_pool(experiment, 10.0)


def test_stretch_to_uint8_known_answer():
    # Ten values; numpy's linear percentiles: 0.5% at index 0.045 -> 4.5, 99.5% at index
    # 8.955 -> 800 + 0.955 * 200 = 991; out = round((v - 4.5) * 255 / 986.5), clipped to 0-255:
    # 100 -> 24.69 -> 25, 400 -> 102.23 -> 102, 800 -> 205.63 -> 206, 1000 -> 257.3 -> 255.
    stack = np.array([[[0, 100, 200, 300, 400]], [[500, 600, 700, 800, 1000]]], np.uint16)
    out = stretch_to_uint8(stack)
    assert out.dtype == np.uint8 and out.shape == (2, 1, 5)
    assert out.ravel().tolist() == [0, 25, 51, 76, 102, 128, 154, 180, 206, 255]
    assert not stretch_to_uint8(np.full((10, 4, 4), 7, np.uint16)).any()


def test_vote_flow_frames_and_export(app, tmp_path):
    server, tokens, _ = app
    alice = Client(server, tokens["alice"])
    status, me = alice.json("GET", "/api/me")
    assert (status, me) == (200, {"name": "alice", "progress": {"voted": 0, "total": 5}})
    status, nxt = alice.json("GET", "/api/next")
    assert status == 200 and nxt["item_id"] in SMALL_ITEMS and nxt["frames"] == 10
    assert alice.json("GET", "/api/next")[1]["item_id"] == nxt["item_id"]  # still pending
    # Frames (of an item presented to alice): its crop of frames t0..t0+9, stretched together
    # to 8 bits.
    raw = small_item_frames(nxt["item_id"])
    expected = stretch_to_uint8(raw)
    for f in (0, 9):
        status, png = alice.request("GET", f"/api/frame?item={nxt['item_id']}&f={f}")
        frame = np.asarray(Image.open(io.BytesIO(png)))
        assert status == 200 and frame.dtype == np.uint8
        np.testing.assert_array_equal(frame, expected[f])
    if raw.std() > 0:  # an A1 item: a ramp in x and t, from 0 to 255
        assert expected[0, 0, 0] == 0 and expected[9, 0, -1] == 255
    else:  # A2: constant
        assert not expected.any()
    status, r = alice.json(
        "POST", "/api/vote", {"item_id": nxt["item_id"], "label": "sick", "why": "blebs"}
    )
    assert (status, r["progress"]) == (201, {"voted": 1, "total": 5})
    assert r["next"]["item_id"] in set(SMALL_ITEMS) - {nxt["item_id"]}  # saves a request
    assert r["next"]["progress"] == r["progress"]
    out = tmp_path / "out" / "votes.csv"
    out.parent.mkdir()
    assert (
        main(["annotate", "export", "--db", str(tmp_path / "votes.sqlite"), "--out", str(out)]) == 0
    )
    (vote,) = read_votes(out)
    assert (vote.item_id, vote.annotator, vote.label, vote.overlap) == (
        nxt["item_id"],
        "alice",
        "sick",
        False,
    )
    assert vote.created_at.endswith("Z")
    assert (out.parent / "votes.settings.json").is_file()


def test_undo_presents_the_item_again(app):
    server, tokens, _ = app
    alice = Client(server, tokens["alice"])
    assert alice.json("POST", "/api/undo")[0] == 409  # nothing to undo
    first = alice.json("GET", "/api/next")[1]["item_id"]
    alice.json("POST", "/api/vote", {"item_id": first, "label": "healthy"})
    second = alice.json("GET", "/api/next")[1]["item_id"]
    assert second != first
    status, r = alice.json("POST", "/api/undo")
    assert (status, r["item_id"], r["label"], r["progress"]["voted"]) == (200, first, "healthy", 0)
    assert r["next"]["item_id"] == first
    assert alice.json("GET", "/api/next")[1]["item_id"] == first
    assert alice.json("POST", "/api/vote", {"item_id": first, "label": "unsure"})[0] == 201
    assert alice.json("GET", "/api/next")[1]["item_id"] == second
    labels = [v.label for v in db.all_votes(server.engine)]
    assert labels == ["unsure"]


def test_bad_requests_are_4xx_and_change_nothing(app):
    server, tokens, path = app
    alice, bob = Client(server, tokens["alice"]), Client(server, tokens["bob"])
    item = alice.json("GET", "/api/next")[1]["item_id"]
    # A vote's reply presents the next item, so "never presented" must exclude that one too.
    shown = alice.json("POST", "/api/vote", {"item_id": item, "label": "healthy"})[1]["next"]
    other = next(i for i in SMALL_ITEMS if i not in (item, shown["item_id"]))
    before = dump(path)
    vote = {"item_id": item, "label": "sick"}
    bad_posts = [
        (alice, {"item_id": "plate1/A9/p1@t0y0x0", "label": "sick"}, 404),  # unknown item
        (alice, {"item_id": "x' OR '1'='1", "label": "sick"}, 404),
        (alice, {"item_id": other, "label": "sick"}, 409),  # never presented to alice
        (alice, {"item_id": item, "label": "dead"}, 400),  # unknown label
        (alice, {"item_id": item, "label": "Healthy"}, 400),
        (alice, {**vote, "annotator": "bob"}, 400),  # no voting as someone else
        (alice, {"item_id": item, "label": 1}, 400),
        (alice, {"item_id": item, "label": "sick", "why": "x" * 2001}, 400),
        (alice, vote, 409),  # second vote on the same item
        (Client(server, "not-a-token"), vote, 401),
        (Client(server, None), vote, 401),
        (bob, vote, 409),  # bob was never shown it
    ]
    for client, body, status in bad_posts:
        assert client.json("POST", "/api/vote", body)[0] == status, body
    assert alice.request("POST", "/api/vote", b"{not json")[0] == 400
    assert alice.request("POST", "/api/vote", b"[]")[0] == 400
    assert Client(server, tokens["alice"]).request("POST", "/api/vote", b"x" * 9000)[0] == 413
    assert Client(server, "wrong").request("POST", "/api/undo")[0] == 401
    assert Client(server, "wrong").request("GET", "/api/next")[0] == 401
    assert alice.request("DELETE", "/api/vote")[0] == 501
    assert dump(path) == before


@pytest.mark.parametrize(
    "path",
    [
        "/static/../db.py",
        "/static/..%2fdb.py",
        "/static/%2e%2e/%2e%2e/exp/manifest.csv",
        "/../exp/manifest.csv",
        "/static/../../../../../etc/passwd",
        "//etc/passwd",
        "/static/",
        "/static/./index.html",
        "/exp/a1.tif",
        "/manifest.csv",
        "/api/frame?item=../exp/a1.tif&f=0",
        "/api/frame?item=plate1/A1/p1@t0y0x44&f=10",
        "/api/frame?item=plate1/A1/p1@t0y0x44&f=../../etc/passwd",
        "/api/frame?item=plate1/A3/p1@t0y0x0&f=0",  # a real position, but above 80 s
    ],
)
def test_no_file_outside_the_crops_and_static_assets(app, path):
    server, tokens, _ = app
    status, body = Client(server, tokens["alice"]).request("GET", path)
    assert 400 <= status < 500
    assert b"root:" not in body and b"plate" not in body and b"import" not in body


def test_static_assets_and_pages(app):
    server, _, _ = app
    anon = Client(server, None)
    for path, needle in [
        ("/", b"<title>DeadNet annotation</title>"),
        ("/concordance", b"Concordance"),
        ("/static/app.js", b"/api/vote"),
        ("/static/style.css", b"#frame"),
    ]:
        status, body = anon.request("GET", path)
        assert status == 200 and needle in body, path


def test_overlap_rule_every_fifth_item(tmp_path):
    """Every 5th item comes from those already scored by another annotator (section 2.2)."""
    pool = build_pool(large_experiment(tmp_path / "exp", items=50))
    engine = db.open_db(str(tmp_path / "o.sqlite"))
    db.sync_items(engine, ((p.id, p.item.position_key, p.dose_s) for p in pool))
    alice, bob = (
        db.annotator_for_token(engine, db.add_annotator(engine, n)) for n in ("alice", "bob")
    )

    def annotate(who, n):
        shown = []
        for _ in range(n):
            nxt = db.next_item(engine, who)
            shown.append((nxt["item_id"], nxt["overlap"]))
            db.cast_vote(engine, who, nxt["item_id"], "healthy", "")
        return shown

    first = annotate(alice, 12)  # nobody else has scored anything: no overlap possible
    assert [o for _, o in first] == [False] * 12
    second = annotate(bob, 20)
    alice_items = {i for i, _ in first}
    for k, (item_id, overlap) in enumerate(second, start=1):
        assert overlap == (k % 5 == 0), k
        assert (item_id in alice_items) == (k % 5 == 0), k
    assert len({i for i, _ in second}) == 20
    exported = {(v.item_id, v.annotator): v.overlap for v in db.all_votes(engine)}
    assert sum(exported.values()) == 4


def test_concordance_known_counts(tmp_path, experiment):
    """Section 3.1's rule: overlaps with an "unsure" vote are left out of the disagreement."""
    engine = db.open_db(str(tmp_path / "c.sqlite"))
    db.sync_items(engine, ((p.id, p.item.position_key, p.dose_s) for p in build_pool(experiment)))
    bob_labels = {SMALL_ITEMS[4]: "sick", SMALL_ITEMS[2]: "unsure"}
    for name in ("alice", "bob"):
        who = db.annotator_for_token(engine, db.add_annotator(engine, name))
        while (item := db.next_item(engine, who)["item_id"]) is not None:
            label = bob_labels.get(item, "healthy") if name == "bob" else "healthy"
            db.cast_vote(engine, who, item, label, "")
    c = db.concordance(engine)
    assert c["annotators"] == [
        {"name": "alice", "healthy": 5, "sick": 0, "unsure": 0, "total": 5},
        {"name": "bob", "healthy": 3, "sick": 1, "unsure": 1, "total": 5},
    ]
    assert c["overlap"] == {
        "items": 4,
        "disagree": 1,
        "disagree_fraction": 0.25,
        "items_with_unsure": 1,
    }
    assert c["by_dose"] == [
        {"dose_s": 0.0, "healthy": 7, "sick": 0, "unsure": 1},
        {"dose_s": 80.0, "healthy": 1, "sick": 1, "unsure": 0},
    ]
    assert (c["items"], c["votes"]) == (5, 10)


def test_restart_loses_nothing(tmp_path, experiment):
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    server = make_server(experiment, url, "127.0.0.1", 0, 80.0)
    serve_in_thread(server)
    token = db.add_annotator(server.engine, "alice")
    alice = Client(server, token)
    for label in ("healthy", "sick"):
        item = alice.json("GET", "/api/next")[1]["item_id"]
        assert alice.json("POST", "/api/vote", {"item_id": item, "label": label})[0] == 201
    pending = alice.json("GET", "/api/next")[1]["item_id"]
    server.shutdown()
    server.server_close()
    server = make_server(experiment, url, "127.0.0.1", 0, 80.0)
    serve_in_thread(server)
    try:
        status, nxt = Client(server, token).json("GET", "/api/next")
        assert (status, nxt["item_id"], nxt["progress"]["voted"]) == (200, pending, 2)
        assert [v.label for v in db.all_votes(server.engine)] == ["healthy", "sick"]
    finally:
        server.shutdown()
        server.server_close()
    # The same database with another pool (a lower dose limit drops the 80 s item) is refused.
    with pytest.raises(UserError, match="not in this experiment's pool"):
        make_server(experiment, url, "127.0.0.1", 0, 40.0)


def test_cli_add_annotator_and_errors(tmp_path, experiment, capsys):
    dbfile = str(tmp_path / "cli.sqlite")
    assert main(["annotate", "add-annotator", "carol", "--db", dbfile]) == 0
    token = capsys.readouterr().out.splitlines()[-1]
    engine = db.open_db(dbfile)
    assert db.annotator_for_token(engine, token).name == "carol"
    assert db.annotator_for_token(engine, token + "x") is None
    with sqlite3.connect(dbfile) as conn:
        (stored,) = conn.execute("SELECT token_sha256 FROM annotators").fetchone()
    assert stored == db.hash_token(token) and token not in stored
    assert main(["annotate", "add-annotator", "carol", "--db", dbfile]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["annotate", "add-annotator", "a,b", "--db", dbfile]) == 2
    out = tmp_path / "v.csv"
    assert main(["annotate", "export", "--db", str(tmp_path / "no.sqlite"), "--out", str(out)]) == 2
    assert "no such database file" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "no.sqlite").exists()
    missing = tmp_path / "nowhere" / "v.csv"
    assert main(["annotate", "export", "--db", dbfile, "--out", str(missing)]) == 2
    assert not missing.parent.exists()
    args = ["annotate", "serve", "--experiment", str(tmp_path), "--db", dbfile, "--port", "1"]
    assert main(args) == 2
    assert "no manifest.csv" in capsys.readouterr().err
