"""The annotation web server: stdlib ``ThreadingHTTPServer``, a JSON API and static pages.

Routes (every ``/api/`` route needs ``Authorization: Bearer <token>``; the annotator is the
token's owner, never a name sent by the client):

==========================  ==============================================================
``GET /``                   the annotation page (``static/index.html``)
``GET /concordance``        the concordance page (``static/concordance.html``)
``GET /static/<name>``      one of the files in ``static/`` (a fixed list read at start)
``GET /api/me``             ``{"name", "progress"}``
``GET /api/next``           the item to annotate: ``{"item_id", "overlap", "frames",
                            "progress"}`` (``item_id`` null when all are done)
``GET /api/frame?item=&f=`` frame ``f`` (0-9) of a pool item, 8-bit PNG, contrast-stretched
``POST /api/vote``          ``{"item_id", "label", "why"?}`` -> 201 ``{"progress", "next"}``
``POST /api/undo``          delete the caller's latest vote -> ``{"item_id", "label",
                            "progress", "next"}``
                            (``next``: what ``/api/next`` would answer, saving a request)
``GET /api/concordance``    counts, disagreement on overlaps, votes by dose
==========================  ==============================================================

No file path is ever built from a request: static files are a dictionary filled at start,
frames are addressed by item id and looked up in the pool.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from sqlalchemy.engine import Engine

from data_prep.annotate import db
from data_prep.annotate.pool import FrameCache, PoolItem, build_pool
from deadnet_caffe.errors import UserError
from deadnet_caffe.paper import SEQUENCE_FRAMES

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
PAGES = {"/": "index.html", "/index.html": "index.html", "/concordance": "concordance.html"}
MAX_BODY_BYTES = 8192
# Own scripts, styles and frames (blob: URLs) only; no framing (no clickjacked votes).
CSP = "default-src 'self'; img-src 'self' blob:; frame-ancestors 'none'; form-action 'self'"
VOTE_KEYS = {"item_id", "label", "why"}

log = logging.getLogger(__name__)


def _load_static() -> dict[str, tuple[bytes, str]]:
    return {
        p.name: (p.read_bytes(), CONTENT_TYPES[p.suffix])
        for p in STATIC_DIR.iterdir()
        if p.is_file() and p.suffix in CONTENT_TYPES
    }


class AnnotationServer(ThreadingHTTPServer):
    """The HTTP server, holding the database engine, the frame cache and the static files.

    Parameters
    ----------
    address : (host, port)
        Where to listen; port 0 picks a free port (see ``server_address`` after start).
    engine : Engine
        The database, with the pool already stored (:func:`db.sync_items`).
    pool : list of PoolItem
        The items whose frames may be served.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], engine: Engine, pool: list[PoolItem]) -> None:
        self.engine = engine
        self.frames = FrameCache(pool)
        self.static = _load_static()
        self._annotators: dict[str, db.Annotator] = {}  # token -> annotator (never deleted)
        super().__init__(address, Handler)

    def annotator(self, token: str) -> db.Annotator | None:
        """The owner of ``token`` (looked up once, then remembered), or None."""
        found = self._annotators.get(token)
        if found is None:
            found = db.annotator_for_token(self.engine, token)
            if found is not None:
                self._annotators[token] = found
        return found

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class Handler(BaseHTTPRequestHandler):
    server: AnnotationServer
    server_version = "deadnet-annotate"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:
        log.info("%s %s", self.address_string(), format % args)

    # --- replies ------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "private, max-age=3600" if cache else "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    # --- requests -----------------------------------------------------------------

    def _annotator(self) -> db.Annotator | None:
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme != "Bearer":
            return None
        return self.server.annotator(token.strip())

    def _read_body(self) -> bytes | None:
        """The request body, or None (and the connection closed) when it is too long."""
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            return None
        return self.rfile.read(length)

    def do_HEAD(self) -> None:
        if urlsplit(self.path).path.startswith("/api/"):  # GET /api/next has side effects
            return self._error(405, "use GET")
        return self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        path = url.path
        if path in PAGES:
            body, ctype = self.server.static[PAGES[path]]
            return self._send(200, body, ctype)
        if path.startswith("/static/"):
            entry = self.server.static.get(path[len("/static/") :])
            if entry is None:
                return self._error(404, "not found")
            return self._send(200, *entry)
        if not path.startswith("/api/"):
            return self._error(404, "not found")
        who = self._annotator()
        if who is None:
            return self._error(401, "unknown or missing token")
        engine = self.server.engine
        if path == "/api/me":
            return self._json(200, {"name": who.name, "progress": db.progress(engine, who)})
        if path == "/api/next":
            return self._json(200, self._next(who))
        if path == "/api/concordance":
            return self._json(200, db.concordance(engine))
        if path == "/api/frame":
            return self._frame(parse_qs(url.query))
        return self._error(404, "not found")

    def _next(self, who: db.Annotator) -> dict:
        return {**db.next_item(self.server.engine, who), "frames": SEQUENCE_FRAMES}

    def _frame(self, query: dict[str, list[str]]) -> None:
        item_id = query.get("item", [""])[0]
        f = query.get("f", [""])[0]
        if item_id not in self.server.frames:
            return self._error(404, "unknown item")
        if not f.isdigit() or int(f) >= SEQUENCE_FRAMES:
            return self._error(400, f"f must be 0..{SEQUENCE_FRAMES - 1}")
        try:
            png = self.server.frames.frames(item_id)[int(f)]
        except UserError as err:  # the experiment's TIFF changed or broke since the start
            log.error("%s", err)
            return self._error(500, "cannot read this item's frames")
        return self._send(200, png, "image/png", cache=True)

    def do_POST(self) -> None:
        raw = self._read_body()
        if raw is None:
            return self._error(413, f"body longer than {MAX_BODY_BYTES} bytes")
        path = urlsplit(self.path).path
        if path not in ("/api/vote", "/api/undo"):
            return self._error(404, "not found")
        who = self._annotator()
        if who is None:
            return self._error(401, "unknown or missing token")
        try:
            if path == "/api/undo":
                undone = db.undo_last(self.server.engine, who)
                return self._json(200, {**undone, "next": self._next(who)})
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                body = None
            if (
                not isinstance(body, dict)
                or not set(body) <= VOTE_KEYS
                or not {"item_id", "label"} <= set(body)
            ):
                return self._error(400, "body must be JSON {item_id, label, why?}")
            item_id, label, why = body["item_id"], body["label"], body.get("why", "")
            if not all(isinstance(v, str) for v in (item_id, label, why)):
                return self._error(400, "item_id, label and why must be strings")
            voted = db.cast_vote(self.server.engine, who, item_id, label, why)
            return self._json(201, {**voted, "next": self._next(who)})
        except db.Rejected as err:
            return self._error(err.status, str(err))


def serve_in_thread(server: AnnotationServer) -> threading.Thread:
    """Start ``server.serve_forever`` in a daemon thread (tests; stop with ``shutdown()``)."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return thread


def make_server(
    experiment: Path | str, db_url: str, host: str, port: int, max_dose_s: float
) -> AnnotationServer:
    """Build the pool of ``experiment``, store it in the database and bind the server.

    Raises
    ------
    UserError
        For a bad experiment, a database of another pool, or a database that cannot be opened.
    """
    pool = build_pool(experiment, max_dose_s)
    engine = db.open_db(db_url)
    db.sync_items(engine, ((p.id, p.item.position_key, p.dose_s) for p in pool))
    try:
        return AnnotationServer((host, port), engine, pool)
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror}).") from None
