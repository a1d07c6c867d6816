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
``GET /api/frame?item=&f=`` frame ``f`` (0-9) of an item presented to the caller, 8-bit PNG,
                            contrast-stretched (403 for an item never presented to them)
``POST /api/vote``          ``{"item_id", "label", "why"?}`` -> 201 ``{"progress", "next"}``
``POST /api/undo``          delete the caller's latest vote -> ``{"item_id", "label",
                            "progress", "next"}``
                            (``next``: what ``/api/next`` would answer, saving a request)
``GET /api/concordance``    counts, disagreement on overlaps, votes by dose
==========================  ==============================================================

No file path is ever built from a request: static files are a dictionary filled at start,
frames are addressed by item id and looked up in the pool.

Hostile or broken clients
-------------------------
- Every malformed request gets a 4xx JSON answer: a bad query (``f=²``), a body that is not
  a JSON object (too deeply nested, invalid UTF-8, lone surrogates) 400; a body that is not
  ``Content-Type: application/json`` 415; a missing, negative, non-numeric or repeated
  ``Content-Length`` 400, one over :data:`MAX_BODY_BYTES` 413; ``Transfer-Encoding``
  (chunked bodies) 411. After a framing error (a body whose end is unknown) the connection
  is closed, so keep-alive never reads a body as the next request.
- A client has ``timeout_s`` from the moment the server waits for its request to the end of
  that request's body; a connection idle or stalled longer is closed (408 when part of a
  request had arrived), and a response the client does not read within ``timeout_s`` is
  abandoned.
- At most ``max_connections`` connections are served at once, each by one thread; more are
  answered 503 at once and closed.
"""

from __future__ import annotations

import contextlib
import email.errors
import ipaddress
import json
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from sqlalchemy.engine import Engine

from data_prep.annotate import db
from data_prep.annotate.pool import FrameCache, PoolItem, build_pool
from data_prep.core.errors import UserError
from data_prep.core.paper import SEQUENCE_FRAMES

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
PAGES = {"/": "index.html", "/index.html": "index.html", "/concordance": "concordance.html"}
MAX_BODY_BYTES = 8192
REQUEST_TIMEOUT_S = 30.0  # to send a whole request (and to read a response)
MAX_CONNECTIONS = 100  # served at once, one thread each
LOG_CHARS = 300  # of a request's log line
LINGER_BYTES = 1 << 20  # read and dropped after refusing a body, so the answer is not reset
# Own scripts, styles and frames (blob: URLs) only; no framing (no clickjacked votes).
CSP = "default-src 'self'; img-src 'self' blob:; frame-ancestors 'none'; form-action 'self'"
VOTE_KEYS = {"item_id", "label", "why"}
# Header lines the parser could not read (such as "Content-Length : 5", whose body would
# then be read as the next request).
HEADER_LINE_DEFECTS = (
    email.errors.MissingHeaderBodySeparatorDefect,
    email.errors.FirstHeaderLineIsContinuationDefect,
    email.errors.InvalidHeaderDefect,
)

log = logging.getLogger(__name__)


def _load_static() -> dict[str, tuple[bytes, str]]:
    return {
        p.name: (p.read_bytes(), CONTENT_TYPES[p.suffix])
        for p in STATIC_DIR.iterdir()
        if p.is_file() and p.suffix in CONTENT_TYPES
    }


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` is reachable from this machine only.

    An IP address is loopback by :mod:`ipaddress`; a name must resolve to loopback addresses
    only (``localhost``); the wildcard ``0.0.0.0`` and names that do not resolve are not.
    """
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


class AnnotationServer(ThreadingHTTPServer):
    """The HTTP server, holding the database engine, the frame cache and the static files.

    ``engine``, the database with the pool stored (:func:`db.sync_items`), is set by
    :func:`make_server` once the address is bound, so that a busy port leaves no database.

    Parameters
    ----------
    address : (host, port)
        Where to listen; port 0 picks a free port (see ``server_address`` after start).
    pool : list of PoolItem
        The items whose frames may be served.
    timeout_s : float
        Time a client has to send a whole request (from the moment the server waits for it),
        and to read a response; connections idle or stalled longer are closed.
    max_connections : int
        Connections served at once (one thread each); more are answered 503 and closed.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    engine: Engine

    def __init__(
        self,
        address: tuple[str, int],
        pool: list[PoolItem],
        timeout_s: float = REQUEST_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.frames = FrameCache(pool)
        self.static = _load_static()
        self.timeout_s = timeout_s
        self._annotators: dict[str, db.Annotator] = {}  # token -> annotator (never deleted)
        self._slots = threading.BoundedSemaphore(max_connections)
        # Connections waiting for (the rest of) a request -> monotonic deadline.
        self._waiting: dict[socket.socket, float] = {}
        self._timed_out: set[socket.socket] = set()
        self._waiting_lock = threading.Lock()
        super().__init__(address, Handler)

    # --- bounded threads ------------------------------------------------------------

    def process_request(self, request: socket.socket, client_address) -> None:
        """Serve the connection in a thread of its own, or answer 503 when all are busy."""
        if not self._slots.acquire(blocking=False):
            self._refuse_busy(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # the thread did not start: free its slot
            self._slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse_busy(self, request: socket.socket) -> None:
        body = json.dumps({"error": "too many connections, try again"}).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Content-Type-Options: nosniff\r\n"
            "Cache-Control: no-store\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        )
        try:
            request.settimeout(1.0)  # a fresh connection: the few bytes fit its send buffer
            request.sendall(head.encode() + body)
        except OSError:
            pass
        self.shutdown_request(request)

    # --- request deadlines ----------------------------------------------------------

    def await_request(self, conn: socket.socket) -> None:
        """Start the clock: ``conn`` has ``timeout_s`` to deliver its next whole request."""
        with self._waiting_lock:
            self._waiting[conn] = time.monotonic() + self.timeout_s

    def request_read(self, conn: socket.socket) -> bool:
        """Stop the clock of ``conn``; False if its deadline had passed (it was cut off)."""
        with self._waiting_lock:
            self._waiting.pop(conn, None)
            late = conn in self._timed_out
            self._timed_out.discard(conn)
        return not late

    def service_actions(self) -> None:
        """Cut off the reading side of connections past their deadline (each poll)."""
        now = time.monotonic()
        with self._waiting_lock:
            for conn in [c for c, deadline in self._waiting.items() if deadline <= now]:
                del self._waiting[conn]
                self._timed_out.add(conn)
                with contextlib.suppress(OSError):  # the handler's blocked read returns EOF
                    conn.shutdown(socket.SHUT_RD)

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


class BadRequest(Exception):
    """A request refused with ``status``; ``close``: the connection cannot be reused (the end
    of its body is unknown, or it ran out of time)."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.close = close


class Handler(BaseHTTPRequestHandler):
    server: AnnotationServer
    server_version = "deadnet-annotate"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes: without TCP_NODELAY, Nagle's algorithm holds the
    # body until the client's delayed ACK, 40 ms per keep-alive request.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        # The deadline (AnnotationServer.service_actions) cuts stalled reads first; the socket
        # timeout is the backstop, and bounds the time a client may take to read a response.
        self.timeout = self.server.timeout_s + 1.0
        self._linger = False
        super().setup()

    def handle_one_request(self) -> None:
        self.server.await_request(self.connection)
        try:
            super().handle_one_request()
        except ConnectionError:  # the client went away mid-request or mid-response
            self.close_connection = True
        finally:
            self.server.request_read(self.connection)

    def parse_request(self) -> bool:
        if not self.raw_requestline.endswith(b"\n"):  # cut off mid-line: deadline or EOF
            self.command, self.request_version = None, "HTTP/1.1"
            self.requestline = str(self.raw_requestline, "iso-8859-1")
            self.close_connection = True
            if self.server.request_read(self.connection):
                self._error(400, "incomplete request line")
            else:
                self._error(408, "the request was not received in time")
            return False
        return super().parse_request()

    def handle_expect_100(self) -> bool:
        # Check the framing before inviting the body: a body that will be refused is not sent.
        try:
            self._body_length()
        except BadRequest as err:
            self.close_connection = True
            self._linger = True
            self._error(err.status, str(err))
            return False
        return super().handle_expect_100()

    def finish(self) -> None:
        super().finish()
        if self._linger:
            self._drain()

    def _drain(self) -> None:
        """After refusing a body: end our side, then read and drop what the client still
        sends (bounded), so that closing does not reset the connection before the client has
        read the answer."""
        conn = self.connection
        end = time.monotonic() + 2.0
        left = LINGER_BYTES
        try:
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(1.0)
            while left > 0 and time.monotonic() < end:
                chunk = conn.recv(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def log_message(self, format: str, *args) -> None:
        # As the base class does: no control characters (terminal escapes) from a request in
        # the log; and at most LOG_CHARS of a request line that may be 64 KB long.
        message = (format % args).translate(self._control_char_table)
        if len(message) > LOG_CHARS:
            message = message[:LOG_CHARS] + "..."
        log.info("%s %s", self.address_string(), message)

    # --- replies ------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "private, max-age=3600" if cache else "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's refusals (a bad request line, 414, 431, 501, 505) as JSON, with
        a status line even when the request line could not be read, and the connection
        closed."""
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        self._linger = True
        if self.command is None:  # the request line was not understood: answer in HTTP/1.1
            self.request_version = "HTTP/1.1"
        self._error(code, message or HTTPStatus(code).phrase)

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    # --- requests -----------------------------------------------------------------

    def _handle(self, route: Callable[[], None]) -> None:
        """Run ``route``, turning every refusal into a JSON answer (never a dropped
        connection); an unexpected error is logged and answered 500."""
        try:
            route()
        except BadRequest as err:
            if err.close:
                self.close_connection = True
                self._linger = True
            self._error(err.status, str(err))
        except db.Rejected as err:
            self._error(err.status, str(err))
        except (ConnectionError, TimeoutError):  # the connection failed: nothing to answer
            raise
        except Exception:
            log.exception("%s %s failed", self.command, self.path)
            self.close_connection = True
            self._error(500, "internal error (see the server's log)")

    def _body_length(self) -> int | None:
        """The body's length from a strict ``Content-Length``, or None without one.

        Raises
        ------
        BadRequest
            411 for ``Transfer-Encoding``; 400 for a malformed header line, a repeated
            Content-Length or one that is not a whole number of bytes; 413 above
            :data:`MAX_BODY_BYTES`. All close the connection: where this body ends is unknown.
        """
        if any(isinstance(d, HEADER_LINE_DEFECTS) for d in self.headers.defects):
            raise BadRequest(400, "malformed header line", close=True)
        if "Transfer-Encoding" in self.headers:
            raise BadRequest(
                411,
                "Transfer-Encoding (chunked bodies) is not accepted: send a Content-Length",
                close=True,
            )
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return None
        value = values[0].strip(" \t")
        if len(values) > 1:
            raise BadRequest(400, "more than one Content-Length", close=True)
        if not re.fullmatch(r"[0-9]+", value):  # no sign, no spaces, ASCII digits only
            raise BadRequest(400, "Content-Length must be a whole number of bytes", close=True)
        if len(value) > len(str(MAX_BODY_BYTES)) or int(value) > MAX_BODY_BYTES:
            raise BadRequest(413, f"body longer than {MAX_BODY_BYTES} bytes", close=True)
        return int(value)

    def _read_request(self, body_allowed: bool) -> bytes | None:
        """Read the rest of the request: its body (None without a Content-Length).

        Raises
        ------
        BadRequest
            For a bad ``Content-Length`` (:meth:`_body_length`), a body where none is allowed
            (400), or a request not complete within the server's ``timeout_s`` (408).
        """
        length = self._body_length()
        if length and not body_allowed:
            raise BadRequest(400, f"{self.command} takes no body", close=True)
        raw = self.rfile.read(length) if length else (b"" if length == 0 else None)
        complete = raw is None or len(raw) == length
        if not self.server.request_read(self.connection) or not complete:
            raise BadRequest(408, "the request was not received in time", close=True)
        return raw

    def _url(self):
        try:
            return urlsplit(self.path)
        except ValueError:  # e.g. "//[" (a malformed IPv6 host)
            raise BadRequest(400, "malformed URL") from None

    def _annotator(self) -> db.Annotator | None:
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme != "Bearer":
            return None
        return self.server.annotator(token.strip())

    def do_HEAD(self) -> None:
        self._handle(self._get)

    def do_GET(self) -> None:
        self._handle(self._get)

    def do_POST(self) -> None:
        self._handle(self._post)

    def _get(self) -> None:
        self._read_request(body_allowed=False)
        url = self._url()
        path = url.path
        if self.command == "HEAD" and path.startswith("/api/"):  # GET /api/next has effects
            return self._error(405, "use GET")
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
            return self._frame(who, parse_qs(url.query))
        return self._error(404, "not found")

    def _next(self, who: db.Annotator) -> dict:
        return {**db.next_item(self.server.engine, who), "frames": SEQUENCE_FRAMES}

    def _frame(self, who: db.Annotator, query: dict[str, list[str]]) -> None:
        item_id = query.get("item", [""])[0]
        f = query.get("f", [""])[0]
        if item_id not in self.server.frames:
            return self._error(404, "unknown item")
        # ASCII digits only: str.isdigit() accepts '²', which int() then refuses.
        if not re.fullmatch(r"[0-9]{1,3}", f) or int(f) >= SEQUENCE_FRAMES:
            return self._error(400, f"f must be 0..{SEQUENCE_FRAMES - 1}")
        if not db.was_presented(self.server.engine, who, item_id):
            return self._error(403, "this item was not presented to you")
        try:
            png = self.server.frames.frames(item_id)[int(f)]
        except UserError as err:  # the experiment's TIFF changed or broke since the start
            log.error("%s", err)
            return self._error(500, "cannot read this item's frames")
        return self._send(200, png, "image/png", cache=True)

    def _post(self) -> None:
        raw = self._read_request(body_allowed=True)
        path = self._url().path
        if path not in ("/api/vote", "/api/undo"):
            return self._error(404, "not found")
        who = self._annotator()
        if who is None:
            return self._error(401, "unknown or missing token")
        if path == "/api/undo":
            if raw:
                raise BadRequest(400, "/api/undo takes no body")
            undone = db.undo_last(self.server.engine, who)
            return self._json(200, {**undone, "next": self._next(who)})
        item_id, label, why = self._vote_body(raw)
        voted = db.cast_vote(self.server.engine, who, item_id, label, why)
        return self._json(201, {**voted, "next": self._next(who)})

    def _vote_body(self, raw: bytes | None) -> tuple[str, str, str]:
        """``(item_id, label, why)`` of a vote's body.

        Raises
        ------
        BadRequest
            400 without a Content-Length or for a body that is not a UTF-8 JSON object
            ``{item_id, label, why?}`` of strings; 415 unless ``Content-Type`` is
            ``application/json`` (charset, if given, UTF-8).
        """
        if raw is None:
            # The client meant to send a body but did not frame it: what follows is no request.
            raise BadRequest(400, "a vote needs a JSON body with a Content-Length", close=True)
        charset = self.headers.get_content_charset()
        if self.headers.get_content_type() != "application/json" or charset not in (
            None,
            "utf-8",
            "utf8",
        ):
            raise BadRequest(415, "the body must be Content-Type: application/json (UTF-8)")
        try:
            body = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):  # bad UTF-8 or JSON; nesting too deep
            body = None
        if (
            not isinstance(body, dict)
            or not set(body) <= VOTE_KEYS
            or not {"item_id", "label"} <= set(body)
        ):
            raise BadRequest(400, "body must be JSON {item_id, label, why?}")
        values = body["item_id"], body["label"], body.get("why", "")
        if not all(isinstance(v, str) and _is_unicode(v) for v in values):
            raise BadRequest(400, "item_id, label and why must be strings")
        return values


def _is_unicode(text: str) -> bool:
    """False for strings with lone surrogates (JSON's "\\ud800"), which no database stores."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def make_server(
    experiment: Path | str,
    db_url: str,
    host: str,
    port: int,
    max_dose_s: float,
    timeout_s: float = REQUEST_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
) -> AnnotationServer:
    """Build the pool of ``experiment``, bind the server, then store the pool in the
    database (``timeout_s`` and ``max_connections``: see :class:`AnnotationServer`).

    Raises
    ------
    UserError
        For a bad experiment, an address that cannot be bound (before the database is
        touched), a database of another pool, or a database that cannot be opened.
    """
    pool = build_pool(experiment, max_dose_s)
    try:
        server = AnnotationServer((host, port), pool, timeout_s, max_connections)
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror}).") from None
    try:
        server.engine = db.open_db(db_url)
        db.sync_items(server.engine, ((p.id, p.item.position_key, p.dose_s) for p in pool))
    except BaseException:
        server.server_close()
        raise
    return server


def start_server(
    experiment: Path | str, db_url: str, host: str, port: int, max_dose_s: float
) -> AnnotationServer:
    """Bind the server of ``annotate serve`` and say where it listens (it serves nothing yet).

    A ``--host`` that is not a loopback address (``0.0.0.0``, a LAN address) gets a warning
    on stderr: the app and its tokens are then open to the network, unencrypted.

    Raises
    ------
    UserError
        For a bad port, experiment or database, or an address that cannot be bound.
    """
    if not 0 <= port < 65536:
        raise UserError(f"--port {port} is not a port number (0 picks a free one).")
    server = make_server(experiment, db_url, host, port, max_dose_s)
    if not is_loopback(host):
        shown = host or "''"  # the empty host listens on every address
        print(
            f"warning: --host {shown} is not a loopback address, so anyone who can reach "
            "this machine can open the app and try tokens, which travel unencrypted; keep the "
            "default 127.0.0.1 behind an HTTPS reverse proxy instead.",
            file=sys.stderr,
            flush=True,
        )
    if db.count_annotators(server.engine) == 0:
        print(
            "no annotators yet: create them with "
            f"`deadnet annotate add-annotator NAME --db {db_url}`"
        )
    print(f"annotation app on {server.url} (Ctrl-C stops it)", flush=True)
    return server
