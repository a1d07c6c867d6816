"""Reliability: 20 concurrent annotators x 200 votes give exactly 4000 vote rows (loopback),
and a killed server loses no acknowledged vote."""

from __future__ import annotations

import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest
from annotate_helpers import Client, large_experiment, serve_in_thread, small_experiment

from data_prep.annotate import db
from data_prep.annotate.server import make_server
from data_prep.core.paper import VOTE_LABELS

ANNOTATORS = 20
VOTES_EACH = 200


@pytest.mark.slow
def test_concurrent_annotators_lose_and_duplicate_nothing(tmp_path):
    experiment = large_experiment(tmp_path / "exp", items=VOTES_EACH)
    server = make_server(experiment, str(tmp_path / "load.sqlite"), "127.0.0.1", 0, 80.0)
    serve_in_thread(server)
    names = [f"annotator{i:02d}" for i in range(ANNOTATORS)]
    tokens = {name: db.add_annotator(server.engine, name) for name in names}
    sent: dict[str, list[tuple[str, str]]] = {name: [] for name in names}
    failures: list[str] = []

    def annotate(name: str) -> None:
        client = Client(server, tokens[name])
        try:
            status, nxt = client.json("GET", "/api/next")
            for k in range(VOTES_EACH):
                label = VOTE_LABELS[k % len(VOTE_LABELS)]
                vote = {"item_id": nxt["item_id"], "label": label}
                status, reply = client.json("POST", "/api/vote", vote)
                if status != 201:
                    failures.append(f"{name} vote {k}: {status} {reply}")
                    return
                sent[name].append((nxt["item_id"], label))
                nxt = reply["next"]  # the vote's answer carries the next item
            if nxt["item_id"] is not None or nxt["progress"]["voted"] != VOTES_EACH:
                failures.append(f"{name}: not done after {VOTES_EACH} votes: {nxt}")
        finally:
            client.close()

    threads = [threading.Thread(target=annotate, args=(name,)) for name in names]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stored = db.all_votes(server.engine)
    finally:
        server.shutdown()
        server.server_close()
    assert failures == []
    assert len(stored) == ANNOTATORS * VOTES_EACH
    expected = {(name, item, label) for name, votes in sent.items() for item, label in votes}
    assert len(expected) == ANNOTATORS * VOTES_EACH
    assert {(v.annotator, v.item_id, v.label) for v in stored} == expected
    # The overlap flag is set on at most every 5th vote of each annotator.
    for name in names:
        assert sum(v.overlap for v in stored if v.annotator == name) <= VOTES_EACH // 5


# The server as `deadnet annotate serve` runs it, in a process of its own (without the
# start-up time of the whole command line).
SERVE = """
import sys
from data_prep.annotate.server import make_server
server = make_server(sys.argv[1], sys.argv[2], "127.0.0.1", 0, 80.0)
print(server.url, flush=True)
server.serve_forever()
"""


@pytest.mark.slow
def test_killed_server_keeps_every_acknowledged_vote(tmp_path):
    """A server process killed with SIGKILL, then restarted: no acknowledged vote is lost."""
    experiment = small_experiment(tmp_path / "exp")
    dbfile = str(tmp_path / "crash.sqlite")
    token = db.add_annotator(db.open_db(dbfile), "alice")

    def start() -> tuple[subprocess.Popen, Client]:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(experiment), dbfile],
            stdout=subprocess.PIPE,
            text=True,
        )
        host, port = proc.stdout.readline().split("//")[1].rstrip("/\n").split(":")
        return proc, Client(SimpleNamespace(server_address=(host, int(port))), token)

    proc, client = start()
    acknowledged = []
    try:
        for label in ("healthy", "sick", "unsure"):
            item = client.json("GET", "/api/next")[1]["item_id"]
            assert client.json("POST", "/api/vote", {"item_id": item, "label": label})[0] == 201
            acknowledged.append((item, label))
        pending = client.json("GET", "/api/next")[1]["item_id"]
    finally:
        proc.kill()
        proc.wait()
    proc, client = start()
    try:
        status, nxt = client.json("GET", "/api/next")
        assert (status, nxt["item_id"], nxt["progress"]["voted"]) == (200, pending, 3)
    finally:
        proc.terminate()
        proc.wait()
    votes = db.all_votes(db.open_db(dbfile, create=False))
    assert [(v.item_id, v.label) for v in votes] == acknowledged
