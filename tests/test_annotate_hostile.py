"""The annotation server against hostile or broken clients, on loopback with a real SQLite db:
malformed parameters and bodies, Content-Type and Content-Length, chunked bodies, stalled
connections, too many connections, frames of items never presented, a non-loopback --host."""

from __future__ import annotations

import json
import select
import socket
import sqlite3
import threading
import time
from urllib.parse import quote

import pytest
from annotate_helpers import SMALL_ITEMS, Client, dump, serve_in_thread, small_experiment

from data_prep.annotate import db
from data_prep.annotate.server import MAX_BODY_BYTES, is_loopback, make_server, start_server
from deadnet_caffe.cli import main

CLIENT_WAIT_S = 20.0  # a client gives up on an answer after this long (a failure, not a timing)


@pytest.fixture
def app(tmp_path):
    """A running server on the small experiment with annotators alice and bob; alice has
    been presented one item (``presented``)."""
    server = make_server(
        small_experiment(tmp_path / "exp"), str(tmp_path / "v.sqlite"), "127.0.0.1", 0, 80.0
    )
    serve_in_thread(server)
    tokens = {name: db.add_annotator(server.engine, name) for name in ("alice", "bob")}
    alice = Client(server, tokens["alice"])
    presented = alice.json("GET", "/api/next")[1]["item_id"]
    alice.close()
    yield server, tokens, presented, tmp_path / "v.sqlite"
    server.shutdown()
    server.server_close()


def parse_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split the bytes a server sent on one connection into (status, headers, body)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, data
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        n = int(headers.get("content-length", "0"))
        out.append((int(status_line.split()[1]), headers, rest[:n]))
        data = rest[n:]
    return out


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def exchange(server, data: bytes, pause_s: float = 0.0) -> list[tuple[int, dict, bytes]]:
    """Send raw bytes on a new connection and read until the server closes it (fails if it
    does not within CLIENT_WAIT_S). With ``pause_s``, send one byte every ``pause_s`` until
    the server answers."""
    with socket.create_connection(server.server_address[:2], timeout=CLIENT_WAIT_S) as sock:
        if pause_s:
            for i in range(len(data)):
                sock.sendall(data[i : i + 1])
                if select.select([sock], [], [], pause_s)[0]:  # answered: stop sending
                    break
        else:
            sock.sendall(data)
        return parse_responses(read_to_end(sock))


def post(token: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [
        "POST /api/vote HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {token}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


# --- bad parameters and bodies: 400, and the connection goes on ---------------------------


@pytest.mark.parametrize(
    "f",
    ["²", "٣", "+1", " 1", "-1", "1.0", "0x1", "1e0", "0" * 5000, "%00", "", "10", "9" * 30],
)
def test_bad_frame_number_is_400_and_the_connection_goes_on(app, f):
    server, tokens, presented, _ = app
    alice = Client(server, tokens["alice"])
    status, body = alice.json("GET", f"/api/frame?item={presented}&f={quote(f, safe='%+')}")
    assert (status, body) == (400, {"error": "f must be 0..9"})
    assert alice.json("GET", "/api/me")[0] == 200  # same keep-alive connection


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("/api/frame?item={item}&f=²", "f must be 0..9"),  # raw UTF-8, not percent-encoded
        ("http://[/api/me", "malformed URL"),  # urlsplit: "Invalid IPv6 URL"
        ("http://[::1/api/me", "malformed URL"),
    ],
)
def test_raw_request_targets_are_400(app, target, error):
    server, tokens, presented, _ = app
    raw = (
        f"GET {target.format(item=presented)} HTTP/1.1\r\nAuthorization: Bearer "
        f"{tokens['alice']}\r\nConnection: close\r\n\r\n"
    ).encode()
    ((status, _, body),) = exchange(server, raw)
    assert (status, json.loads(body)) == (400, {"error": error})


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("//[", 404),  # http.server reduces the leading "//" to "/"
        ("/api/frame?item=%ff%fe&f=0", 404),  # not UTF-8
        ("/api/frame?f=0", 404),
        ("/api/frame?item=%00&item=..&f=0&f=1", 404),
        ("/api/me?%%%=&&==", 200),  # the query is not read
    ],
)
def test_malformed_urls_get_an_answer_and_the_connection_goes_on(app, path, status):
    server, tokens, _, _ = app
    alice = Client(server, tokens["alice"])
    got, body = alice.json("GET", path)
    assert got == status and ("error" in body) == (status != 200)
    assert alice.json("GET", "/api/me")[0] == 200


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET\r\n\r\n", 400),
        (b"GET / HTTP/1.1 x\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"get / HTTP/1.1\r\n\r\n", 501),
        (b"DELETE /api/vote HTTP/1.1\r\nContent-Length: 5\r\n\r\nGET /", 501),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
        (b"POST /api/vote HTTP/1.1\r\nContent-Length : 5\r\n\r\nGET /", 400),
        (b"POST /api/vote HTTP/1.1\r\n Content-Length: 5\r\n\r\nGET /", 400),
        (b"POST /api/vote HTTP/1.1\r\n: 5\r\n\r\n", 400),
    ],
    ids=[
        *("one word", "four words", "HTTP/2", "lower case", "DELETE", "414", "431"),
        *("space before colon", "continuation first", "no name"),
    ],
)
def test_unparsable_requests_get_a_json_answer_and_a_close(app, raw, status):
    server, _, _, _ = app
    ((got, headers, body),) = exchange(server, raw)
    assert (got, headers["connection"]) == (status, "close") and "error" in json.loads(body)


NESTED = b'{"item_id": ' + b"[" * MAX_BODY_BYTES  # 8 KB of nesting
BAD_BODIES = [
    b"[" * MAX_BODY_BYTES,
    NESTED[:MAX_BODY_BYTES],
    b"{" * 4000 + b"}" * 4000,
    b'{"item_id": "\xff", "label": "sick"}',  # invalid UTF-8
    b'\xef\xbb\xbf{"item_id": "a", "label": "sick"}',  # UTF-8 BOM
    '{"item_id": "a", "label": "sick"}'.encode("utf-16"),
    b'{"item_id": "\\ud800", "label": "sick"}',  # a lone surrogate
    b'{"item_id": "plate1/A1/p1@t0y0x44", "label": "sick", "why": "\\udfff"}',
    b'{"item_id": NaN, "label": "sick"}',
    b'{"item_id": 1' + b"0" * 5000 + b', "label": "sick"}',  # an int with 5001 digits
    b'{"item_id": 1e999, "label": "sick"}',
    b'{"item_id": "a", "label": "sick", "label": 5}',
    b'{"item_id": "a"}',
    b'{"item_id": "a", "label": "sick"} trailing',
    b"",
    b"null",
    b'"item_id"',
    b"\x00" * 100,
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_bad_json_body_is_400_and_changes_nothing(app, body):
    server, tokens, _, path = app
    before = dump(path)
    alice = Client(server, tokens["alice"])
    status, reply = alice.json("POST", "/api/vote", body)
    assert status == 400 and "error" in reply
    assert alice.json("GET", "/api/me")[0] == 200  # same keep-alive connection
    assert dump(path) == before


def test_a_valid_vote_with_odd_but_legal_json_is_accepted(app):
    """The refusals above are not blanket ones: escapes, spacing and charset case pass."""
    server, tokens, presented, _ = app
    alice = Client(server, tokens["alice"])
    body = json.dumps({"label": "sick", "why": "bl\u00e9bs \U0001f52c", "item_id": presented})
    status, _ = alice.request(
        "POST", "/api/vote", f"\n {body} \t".encode(), "Application/JSON; charset=UTF-8"
    )
    assert status == 201
    (vote,) = db.all_votes(server.engine)
    assert (vote.item_id, vote.label) == (presented, "sick")


# --- Content-Type -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/json",
        "application/jsonx",
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
    ],
)
def test_a_vote_that_is_not_application_json_is_415(app, content_type):
    server, tokens, presented, path = app
    before = dump(path)
    alice = Client(server, tokens["alice"])
    body = json.dumps({"item_id": presented, "label": "sick"}).encode()
    status, reply = alice.request("POST", "/api/vote", body, content_type)
    assert status == 415 and b"application/json" in reply
    assert dump(path) == before
    assert alice.request("POST", "/api/vote", body)[0] == 201  # the same, as JSON


# --- Content-Length and chunked bodies: refused, and the connection closed ----------------


@pytest.mark.parametrize(
    ("lengths", "status"),
    [
        ([], 400),  # a vote without a Content-Length
        (["-1"], 400),
        (["-0"], 400),
        (["abc"], 400),
        (["²"], 400),
        (["١٢"], 400),  # Arabic-Indic digits, which int() would take
        (["+52"], 400),
        (["5_2"], 400),
        (["52.0"], 400),
        (["0x34"], 400),
        (["52", "52"], 400),  # repeated
        (["52", "9"], 400),
        ([str(MAX_BODY_BYTES + 1)], 413),
        (["9" * 40], 413),
    ],
)
def test_bad_content_length_is_refused_and_the_connection_closed(app, lengths, status):
    server, tokens, presented, path = app
    before = dump(path)
    body = json.dumps({"item_id": presented, "label": "sick"}).encode()  # 52 bytes
    headers = [("Content-Type", "application/json"), *(("Content-Length", n) for n in lengths)]
    raw = post(tokens["alice"], {}, b"")[:-2]  # the head without its closing blank line
    raw += "".join(f"{k}: {v}\r\n" for k, v in headers).encode() + b"\r\n" + body
    # The body holds a second request: answering it would mean the framing went astray.
    raw += b"GET /api/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tokens["alice"].encode()
    raw += b"\r\n\r\n"
    (reply,) = exchange(server, raw)  # one answer, then the server closes
    assert reply[0] == status and reply[1]["connection"] == "close"
    assert "error" in json.loads(reply[2])
    assert dump(path) == before


def test_expect_100_continue_is_not_sent_for_a_body_that_will_be_refused(app):
    server, tokens, presented, _ = app
    head = {"Content-Type": "application/json", "Expect": "100-continue"}
    too_long = post(tokens["alice"], {**head, "Content-Length": str(MAX_BODY_BYTES + 1)}, b"")
    assert [r[0] for r in exchange(server, too_long)] == [413]  # and no "100 Continue"
    vote = json.dumps({"item_id": presented, "label": "sick"}).encode()
    fine = post(tokens["alice"], {**head, "Content-Length": str(len(vote))}, b"")
    with socket.create_connection(server.server_address[:2], timeout=CLIENT_WAIT_S) as sock:
        sock.sendall(fine)
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(vote)
        sock.shutdown(socket.SHUT_WR)
        assert [r[0] for r in parse_responses(read_to_end(sock))] == [201]


@pytest.mark.parametrize(
    "encoding", ["chunked", "gzip, chunked", "identity", "chunked\r\nContent-Length: 52"]
)
def test_chunked_bodies_are_refused_and_the_connection_closed(app, encoding):
    server, tokens, presented, path = app
    before = dump(path)
    vote = json.dumps({"item_id": presented, "label": "sick"}).encode()
    smuggled = b"GET /api/next HTTP/1.1\r\nHost: x\r\n\r\n"
    chunks = b"%x\r\n%s\r\n0\r\n\r\n" % (len(vote), vote) + smuggled
    head = {"Content-Type": "application/json", "Transfer-Encoding": encoding}
    (reply,) = exchange(server, post(tokens["alice"], head, chunks))
    assert (reply[0], reply[1]["connection"]) == (411, "close")
    assert dump(path) == before


def test_get_with_a_body_is_refused_and_the_connection_closed(app):
    server, tokens, _, _ = app
    smuggled = b"POST /api/undo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    raw = (
        b"GET /api/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (tokens["alice"].encode(), len(smuggled), smuggled)
    )
    (reply,) = exchange(server, raw)
    assert (reply[0], reply[1]["connection"]) == (400, "close")


def test_undo_takes_no_body(app):
    server, tokens, presented, _ = app
    alice = Client(server, tokens["alice"])
    alice.json("POST", "/api/vote", {"item_id": presented, "label": "sick"})
    assert alice.json("POST", "/api/undo", b'{"x": 1}')[0] == 400
    assert len(db.all_votes(server.engine)) == 1
    assert alice.json("POST", "/api/undo")[0] == 200
    assert db.all_votes(server.engine) == []


# --- frames: only of items presented to the caller ----------------------------------------


def test_frames_only_of_items_presented_to_that_annotator(app):
    server, tokens, presented, _ = app
    alice, bob = Client(server, tokens["alice"]), Client(server, tokens["bob"])
    for item in SMALL_ITEMS:
        expected = 200 if item == presented else 403
        assert alice.request("GET", f"/api/frame?item={item}&f=0")[0] == expected, item
        assert bob.request("GET", f"/api/frame?item={item}&f=9")[0] == 403, item
    assert Client(server, None).request("GET", f"/api/frame?item={presented}&f=0")[0] == 401
    # Once presented to bob, his item's frames are his; alice's stay hers after her vote.
    bobs = bob.json("GET", "/api/next")[1]["item_id"]
    assert bob.request("GET", f"/api/frame?item={bobs}&f=9")[0] == 200
    alice.json("POST", "/api/vote", {"item_id": presented, "label": "healthy"})
    assert alice.request("GET", f"/api/frame?item={presented}&f=3")[0] == 200
    status, reply = alice.json("GET", "/api/frame?item=plate1/A9/p1@t0y0x0&f=0")
    assert (status, reply) == (404, {"error": "unknown item"})


# --- stalled connections and too many connections -----------------------------------------


@pytest.fixture
def quick(request, tmp_path):
    """A server that gives clients 1 s per request (or the seconds given by indirect
    parametrization) and serves at most 4 connections."""
    server = make_server(
        small_experiment(tmp_path / "exp"),
        str(tmp_path / "q.sqlite"),
        "127.0.0.1",
        0,
        80.0,
        timeout_s=getattr(request, "param", 1.0),
        max_connections=4,
    )
    serve_in_thread(server)
    yield server, db.add_annotator(server.engine, "alice")
    server.shutdown()
    server.server_close()


def test_stalled_connections_are_closed(quick):
    server, token = quick
    auth = f"Authorization: Bearer {token}\r\n".encode()
    assert exchange(server, b"") == []  # idle: closed without a word
    head_only = b"GET /api/me HTTP/1.1\r\nHost: x\r\n" + auth  # no blank line
    assert [r[0] for r in exchange(server, head_only)] == [408]
    part_body = b"POST /api/vote HTTP/1.1\r\nContent-Length: 60\r\n" + auth + b"\r\n{"
    assert [r[0] for r in exchange(server, part_body)] == [408]
    # One byte every 0.2 s: a whole request would take 8 s; cut off at 1 s.
    assert [r[0] for r in exchange(server, head_only + b"\r\n", pause_s=0.2)] == [408]
    # A keep-alive client that goes quiet after a request is closed too.
    with socket.create_connection(server.server_address[:2], timeout=CLIENT_WAIT_S) as sock:
        sock.sendall(head_only + b"\r\n")
        assert [r[0] for r in parse_responses(read_to_end(sock))] == [200]


def connection_threads() -> int:
    return sum("process_request_thread" in t.name for t in threading.enumerate())


# 3 s: the 4 held connections outlast the 36 refusals even on a busy machine.
@pytest.mark.parametrize("quick", [3.0], indirect=True)
def test_connections_and_threads_are_bounded(quick):
    """40 stalled connections on a server serving 4: 4 threads, 36 answered 503 at once."""
    server, _ = quick
    before = connection_threads()  # (other tests' servers may still hold some)
    socks = [
        socket.create_connection(server.server_address[:2], timeout=CLIENT_WAIT_S)
        for _ in range(40)
    ]
    try:
        answered: set[socket.socket] = set()
        end = time.monotonic() + CLIENT_WAIT_S
        while len(answered) < 36 and time.monotonic() < end:
            answered.update(select.select(socks, [], [], 0.05)[0])
        held = connection_threads() - before
        answers = [read_to_end(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    assert held <= 4
    busy = [parse_responses(a) for a in answers if a]
    assert len(busy) == 36 and {r[0][0] for r in busy} == {503}
    assert all(r[0][1]["connection"] == "close" for r in busy)
    assert answers.count(b"") == 4  # the 4 served ones, closed when their time ran out
    # The slots are free again (each once its thread has ended).
    statuses = []
    while len(statuses) < 50 and 200 not in statuses:
        statuses.append(Client(server, None).request("GET", "/")[0])
        time.sleep(0.1 * (statuses[-1] != 200))
    assert statuses[-1] == 200 and set(statuses) <= {200, 503}


def test_an_internal_error_is_500_and_serving_goes_on(app):
    server, tokens, presented, path = app
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE votes")
    alice = Client(server, tokens["alice"])
    status, reply = alice.json("POST", "/api/vote", {"item_id": presented, "label": "sick"})
    assert (status, reply) == (500, {"error": "internal error (see the server's log)"})
    assert Client(server, None).request("GET", "/")[0] == 200


# --- --host ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("", False),
        ("::", False),
        ("192.168.1.20", False),
        ("10.0.0.1", False),
        ("no-such-host.invalid", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_non_loopback_host_is_warned_about(tmp_path, capsys):
    experiment = small_experiment(tmp_path / "exp")
    for host, warned in (("127.0.0.1", False), ("0.0.0.0", True)):
        # bound, but never serving: nothing answers
        server = start_server(experiment, str(tmp_path / "h.db"), host, 0, 80.0)
        server.server_close()
        out, err = capsys.readouterr()
        assert "annotation app on http://" in out
        if warned:
            assert err.startswith("warning: --host 0.0.0.0 is not a loopback address")
            assert len(err.strip().splitlines()) == 1
        else:
            assert err == ""


def test_a_busy_port_is_refused_before_the_database_is_made(tmp_path, capsys):
    experiment = small_experiment(tmp_path / "exp")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        args = ["annotate", "serve", "--experiment", str(experiment), "--db"]
        assert main([*args, str(tmp_path / "new.sqlite"), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"deadnet annotate: cannot listen on 127.0.0.1:{port}")
    assert len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]
