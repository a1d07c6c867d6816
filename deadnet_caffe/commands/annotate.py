"""The expert annotation web app for Data Set B (paper section 2.2): serve 256 px x 10-frame
crops of a raw experiment at random to annotators who vote Healthy, Sick or Unsure (every
5th item from those already scored by another annotator), create annotators, and export the
votes as votes.csv for `deadnet dataset B`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from argparse import ArgumentDefaultsHelpFormatter
from pathlib import Path

from data_prep.annotate import db
from data_prep.annotate.server import AnnotationServer, is_loopback, make_server
from data_prep.core.errors import UserError
from data_prep.core.paper import DATASET_B_DOSE_RANGE_S
from data_prep.core.runinfo import write_settings
from data_prep.votes_csv import COLUMNS, write_votes
from deadnet_caffe.checks import nonnegative_float

NAME = "annotate"
HELP = "run the Data Set B annotation web app, add annotators, export votes"

DB_HELP = "SQLAlchemy URL (sqlite:///path.sqlite, postgresql+psycopg://...) or an SQLite path"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help, description=help, formatter_class=ArgumentDefaultsHelpFormatter
        )

    serve = action("serve", "serve the annotation page (Ctrl-C stops it)")
    serve.add_argument("--experiment", type=Path, required=True, help="raw experiment folder")
    serve.add_argument("--db", required=True, help=DB_HELP)
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (any other than loopback is warned about: put the app "
        "behind an HTTPS reverse proxy)",
    )
    serve.add_argument(
        "--port", type=int, default=8080, help="port to listen on (0: any free port)"
    )
    serve.add_argument(
        "--max-dose-s",
        type=nonnegative_float,
        default=DATASET_B_DOSE_RANGE_S[1],
        help="only positions with at most this dose (s of 395 nm light) are annotated",
    )
    add = action("add-annotator", "create an annotator and print its secret token")
    add.add_argument("name", help="annotator name (as it appears in votes.csv)")
    add.add_argument("--db", required=True, help=DB_HELP)
    export = action("export", "write every vote as votes.csv (the data_prep.votes_csv schema)")
    export.add_argument("--db", required=True, help=DB_HELP)
    export.add_argument("--out", type=Path, required=True, help="votes CSV to write")


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _sqlite_file(url: str) -> Path | None:
    """The SQLite file of a ``--db`` value (a plain path or ``sqlite:///``), else None."""
    if "://" not in url:
        return Path(url)
    if url.startswith("sqlite:///") and url not in ("sqlite:///", "sqlite:///:memory:"):
        return Path(url[len("sqlite:///") :])
    return None


def _check_db(url: str) -> None:
    """Refuse a ``--db`` that names something other than an SQLite database (or a new file)."""
    path = _sqlite_file(url)
    if path is None or not path.exists():
        return
    if path.is_dir():
        raise UserError(f"--db {url} is a folder, not a database file.")
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except OSError as err:
        raise UserError(f"--db {url}: cannot read it ({err.strerror}).") from None
    if head and head != _SQLITE_MAGIC:
        raise UserError(f"--db {url} is not an SQLite database (nothing was changed).")


def _check_export(out: Path, url: str) -> None:
    """Refuse an export ``--out`` that is a folder, the database or a file other than votes."""
    db_file = _sqlite_file(url)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give the votes CSV file to write.")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: the folder {out.parent} does not exist.")
    if db_file is not None and out.exists() and out.resolve() == db_file.resolve():
        raise UserError(f"--out {out} is the database itself; choose another file.")
    if out.exists():
        try:
            with out.open(newline="") as fh:
                header = fh.readline().strip()
        except (OSError, UnicodeDecodeError):
            header = ""
        if header != ",".join(COLUMNS):
            raise UserError(
                f"--out {out} exists and is not a votes CSV; choose another file "
                "(nothing was changed)."
            )
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"--out {out}: the folder {out.parent} is not writable.")


def run(args) -> int:
    _check_db(args.db)
    if args.action == "add-annotator":
        token = db.add_annotator(db.open_db(args.db), args.name)
        print(f"annotator {args.name.strip()!r} created; secret token (shown only once):")
        print(token)
        return 0
    if args.action == "export":
        _check_export(args.out, args.db)
        engine = db.open_db(args.db, create=False)
        votes = db.all_votes(engine)
        try:
            write_votes(args.out, votes)
        except OSError as err:
            raise UserError(f"--out {args.out}: cannot write it ({err.strerror}).") from None
        settings = {"command": "annotate export", "db": str(engine.url), "votes": len(votes)}
        write_settings(args.out.parent, settings, name=f"{args.out.stem}.settings.json")
        print(f"{len(votes)} votes written to {args.out}")
        return 0
    server = start_server(args)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def start_server(args) -> AnnotationServer:
    """Bind the server of ``annotate serve`` and say where it listens (it serves nothing yet).

    A ``--host`` that is not a loopback address (``0.0.0.0``, a LAN address) gets a warning
    on stderr: the app and its tokens are then open to the network, unencrypted.

    Raises
    ------
    UserError
        For a bad port, experiment or database, or an address that cannot be bound.
    """
    if not 0 <= args.port < 65536:
        raise UserError(f"--port {args.port} is not a port number (0 picks a free one).")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    server = make_server(args.experiment, args.db, args.host, args.port, args.max_dose_s)
    if not is_loopback(args.host):
        shown = args.host or "''"  # the empty host listens on every address
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
            f"`deadnet annotate add-annotator NAME --db {args.db}`"
        )
    print(f"annotation app on {server.url} (Ctrl-C stops it)", flush=True)
    return server
