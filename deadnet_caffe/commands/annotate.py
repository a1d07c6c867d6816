"""The expert annotation web app for Data Set B (paper section 2.2): serve 256 px x 10-frame
crops of a raw experiment at random to annotators who vote Healthy, Sick or Unsure (every
5th item from those already scored by another annotator), create annotators, and export the
votes as votes.csv for `deadnet dataset B`."""

from __future__ import annotations

import argparse
import logging
from argparse import ArgumentDefaultsHelpFormatter
from pathlib import Path

from data_prep.annotate import db
from data_prep.annotate.server import start_server
from data_prep.core.paper import DATASET_B_DOSE_RANGE_S
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


def run(args) -> int:
    db.check_db_file(args.db)
    if args.action == "add-annotator":
        token = db.add_annotator(db.open_db(args.db), args.name)
        print(f"annotator {args.name.strip()!r} created; secret token (shown only once):")
        print(token)
        return 0
    if args.action == "export":
        n = db.export_votes(args.db, args.out)
        print(f"{n} votes written to {args.out}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    server = start_server(args.experiment, args.db, args.host, args.port, args.max_dose_s)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
