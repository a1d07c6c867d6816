"""The annotation database: annotators, items, presentations and votes (SQLAlchemy Core).

Any SQLAlchemy URL works: SQLite (the default; WAL journal, a busy timeout and
``BEGIN IMMEDIATE`` transactions so concurrent writers queue instead of failing) or
PostgreSQL for a team (``postgresql+psycopg://user@host/db``; install ``psycopg`` first).
Every statement is built with SQLAlchemy Core, so every value is a bound parameter.

Tables
------
- ``annotators``: name (unique) and the SHA-256 of the secret token (the token itself is
  shown once, by :func:`add_annotator`, and never stored);
- ``items``: the pool (id, position key, dose);
- ``presentations``: which item was shown to whom, in order, and whether it came from the
  already-scored pool (unique per annotator and item);
- ``votes``: one per annotator and item (unique), label, optional "why", time.

Presentation rule (paper section 2.2): items are drawn at random; every
``OVERLAP_EVERY_NTH``-th item presented to an annotator is drawn from the items already
voted on by another annotator (and never shown to this one), when there are any. The other
items are drawn from those nobody has been shown yet, then from those not shown to this
annotator.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    select,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError

from data_prep.concordance import count_disagreement
from data_prep.core.errors import UserError
from data_prep.core.paper import OVERLAP_EVERY_NTH, VOTE_LABELS
from data_prep.core.runinfo import write_settings
from data_prep.votes_csv import COLUMNS, Vote, write_votes

SQLITE_BUSY_TIMEOUT_MS = 30_000
WHY_MAX_CHARS = 2000
NAME_MAX_CHARS = 100

metadata = MetaData()
annotators = Table(
    "annotators",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(NAME_MAX_CHARS), nullable=False, unique=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", String(32), nullable=False),
)
items = Table(
    "items",
    metadata,
    Column("id", String(300), primary_key=True),
    Column("position_key", String(250), nullable=False),
    Column("dose_s", Float, nullable=False),
)
presentations = Table(
    "presentations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("annotator_id", Integer, ForeignKey("annotators.id"), nullable=False),
    Column("item_id", String(300), ForeignKey("items.id"), nullable=False),
    Column("overlap", Boolean, nullable=False),
    Column("presented_at", String(32), nullable=False),
    UniqueConstraint("annotator_id", "item_id", name="one_presentation_per_item"),
    Index("presentations_by_item", "item_id"),
)
votes = Table(
    "votes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("annotator_id", Integer, ForeignKey("annotators.id"), nullable=False),
    Column("item_id", String(300), ForeignKey("items.id"), nullable=False),
    Column("label", String(16), nullable=False),
    Column("overlap", Boolean, nullable=False),
    Column("why", Text, nullable=False, default=""),
    Column("created_at", String(32), nullable=False),
    UniqueConstraint("annotator_id", "item_id", name="one_vote_per_item"),
    Index("votes_by_item", "item_id"),
)

T = TypeVar("T")


class Rejected(Exception):
    """A request the database refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Annotator:
    id: int
    name: str


def now_iso() -> str:
    """The current UTC time, ISO 8601 with microseconds and a ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a token (tokens are 256-bit random, so no salt is needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def open_db(url: str, create: bool = True) -> Engine:
    """An engine for ``url`` with the schema created if missing.

    A plain path (no ``://``) is taken as an SQLite file; with ``create=False`` that file
    must exist already.

    Raises
    ------
    UserError
        If the URL is malformed, its driver is missing or the database cannot be opened.
    """
    if "://" not in url:
        url = f"sqlite:///{url}"
    try:
        engine = create_engine(url)
    except (ArgumentError, ImportError) as err:
        raise UserError(f"{url}: cannot open the database ({err}).") from None
    if engine.dialect.name == "sqlite":
        database = engine.url.database or ""
        if database not in ("", ":memory:") and not Path(database).parent.is_dir():
            raise UserError(f"{url}: the folder {Path(database).parent} does not exist.")
        if not create and database not in ("", ":memory:") and not Path(database).is_file():
            raise UserError(f"{url}: no such database file.")
        _configure_sqlite(engine)
    try:
        metadata.create_all(engine)
    except OperationalError as err:
        raise UserError(f"{url}: cannot open the database ({err.orig}).") from None
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event below opens transactions
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        # WAL + NORMAL: a commit survives a crash or restart of the server (not a power cut).
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        # Take the write lock at the start: read-then-write transactions never deadlock.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _transaction(engine: Engine, work: Callable[[Connection], T], attempts: int = 5) -> T:
    """Run ``work`` in one transaction, retrying when the database is briefly locked."""
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                return work(conn)
        except OperationalError as err:
            locked = isinstance(err.orig, sqlite3.OperationalError) and "locked" in str(err.orig)
            if not locked or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


# --- annotators -----------------------------------------------------------------------


def add_annotator(engine: Engine, name: str) -> str:
    """Create annotator ``name`` and return its new secret token (shown once, stored hashed).

    Raises
    ------
    UserError
        If the name is empty, too long or already taken.
    """
    name = name.strip()
    if not name or len(name) > NAME_MAX_CHARS or any(c in name for c in "\r\n\t,"):
        raise UserError(
            f"annotator name {name!r} must be 1-{NAME_MAX_CHARS} characters without commas, "
            "tabs or line breaks."
        )
    token = secrets.token_urlsafe(32)
    row = {"name": name, "token_sha256": hash_token(token), "created_at": now_iso()}
    try:
        _transaction(engine, lambda c: c.execute(insert(annotators).values(**row)))
    except IntegrityError:
        raise UserError(f"{engine.url}: annotator {name!r} exists already.") from None
    return token


def count_annotators(engine: Engine) -> int:
    """Number of annotators in the database."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(annotators)).scalar_one())


def annotator_for_token(engine: Engine, token: str) -> Annotator | None:
    """The annotator whose token this is, or None."""
    if not token:
        return None
    with engine.connect() as conn:
        row = conn.execute(
            select(annotators.c.id, annotators.c.name).where(
                annotators.c.token_sha256 == hash_token(token)
            )
        ).first()
    return Annotator(row.id, row.name) if row else None


# --- items ----------------------------------------------------------------------------


def sync_items(engine: Engine, pool: Iterable[tuple[str, str, float]]) -> int:
    """Store the pool ``(item_id, position_key, dose_s)``; return the number of items.

    Items already stored are kept; a database holding items outside the pool belongs to
    another experiment (or other settings) and is refused.

    Raises
    ------
    UserError
        If the database holds items that are not in the pool.
    """
    pool = list(pool)
    ids = {p[0] for p in pool}

    def work(conn: Connection) -> int:
        stored = set(conn.execute(select(items.c.id)).scalars())
        foreign = stored - ids
        if foreign:
            raise UserError(
                f"{engine.url}: the database holds {len(foreign)} item(s) that are not in this "
                f"experiment's pool (e.g. {sorted(foreign)[0]}); use the experiment and "
                "--max-dose-s it was made with, or a new database."
            )
        new = [
            {"id": i, "position_key": k, "dose_s": float(d)} for i, k, d in pool if i not in stored
        ]
        if new:
            conn.execute(insert(items), new)
        return len(ids)

    return _transaction(engine, work)


# --- presentation and votes -----------------------------------------------------------


# Statements built once; values are bound at execution (``bindparam``).
_me = bindparam("annotator_id", type_=Integer)
_item = bindparam("item_id", type_=String)
_shown_to_me = exists().where(
    and_(presentations.c.annotator_id == _me, presentations.c.item_id == items.c.id)
)
_random_item = select(items.c.id).order_by(func.random()).limit(1)
_VOTED = (
    select(func.count()).select_from(votes).where(votes.c.annotator_id == _me).scalar_subquery()
)
_PROGRESS = select(_VOTED, select(func.count()).select_from(items).scalar_subquery())
_PENDING = (
    select(presentations.c.item_id, presentations.c.overlap)
    .where(
        presentations.c.annotator_id == _me,
        ~exists().where(
            and_(votes.c.annotator_id == _me, votes.c.item_id == presentations.c.item_id)
        ),
    )
    .order_by(presentations.c.id.desc())
    .limit(1)
)
_N_SHOWN = (
    select(func.count()).select_from(presentations).where(presentations.c.annotator_id == _me)
)
_DRAW_OVERLAP = _random_item.where(
    exists().where(and_(votes.c.item_id == items.c.id, votes.c.annotator_id != _me)),
    ~_shown_to_me,
)
_DRAW_UNSEEN = _random_item.where(~exists().where(presentations.c.item_id == items.c.id))
_DRAW_NOT_MINE = _random_item.where(~_shown_to_me)
_PRESENTED = select(presentations.c.overlap).where(
    presentations.c.annotator_id == _me, presentations.c.item_id == _item
)
_ITEM_EXISTS = select(items.c.id).where(items.c.id == _item)


def _progress(conn: Connection, annotator_id: int) -> dict[str, int]:
    voted, total = conn.execute(_PROGRESS, {"annotator_id": annotator_id}).one()
    return {"voted": int(voted), "total": int(total)}


def progress(engine: Engine, annotator: Annotator) -> dict[str, int]:
    """``{"voted", "total"}``: the annotator's votes and the pool size."""
    with engine.connect() as conn:
        return _progress(conn, annotator.id)


def _draw(conn: Connection, annotator_id: int) -> tuple[str, bool] | None:
    """Draw the next item for the annotator by the presentation rule (module docstring)."""
    me = {"annotator_id": annotator_id}
    n_shown = conn.execute(_N_SHOWN, me).scalar_one()
    if (n_shown + 1) % OVERLAP_EVERY_NTH == 0:
        item_id = conn.execute(_DRAW_OVERLAP, me).scalar()
        if item_id is not None:
            return item_id, True
    for statement in (_DRAW_UNSEEN, _DRAW_NOT_MINE):
        item_id = conn.execute(statement, me).scalar()
        if item_id is not None:
            return item_id, False
    return None


def next_item(engine: Engine, annotator: Annotator) -> dict:
    """The item to show the annotator: the pending one, else a newly drawn one.

    Returns
    -------
    dict
        ``{"item_id", "overlap", "progress": {"voted", "total"}}``, with ``item_id`` None when
        the annotator has voted on every item.
    """

    def work(conn: Connection) -> dict:
        pending = conn.execute(_PENDING, {"annotator_id": annotator.id}).first()
        if pending is None:
            pending = _draw(conn, annotator.id)
            if pending is not None:
                conn.execute(
                    insert(presentations).values(
                        annotator_id=annotator.id,
                        item_id=pending[0],
                        overlap=pending[1],
                        presented_at=now_iso(),
                    )
                )
        return {
            "item_id": pending[0] if pending else None,
            "overlap": bool(pending[1]) if pending else False,
            "progress": _progress(conn, annotator.id),
        }

    return _transaction(engine, work)


def was_presented(engine: Engine, annotator: Annotator, item_id: str) -> bool:
    """Whether ``item_id`` has been presented to the annotator (voted on or pending)."""
    with engine.connect() as conn:
        key = {"annotator_id": annotator.id, "item_id": item_id}
        return conn.execute(_PRESENTED, key).first() is not None


def cast_vote(engine: Engine, annotator: Annotator, item_id: str, label: str, why: str) -> dict:
    """Record the annotator's vote on an item presented to them.

    Returns
    -------
    dict
        ``{"progress": {"voted", "total"}}``.

    Raises
    ------
    Rejected
        400 for an unknown label or a too long "why", 404 for an item not in the pool,
        409 for an item not presented to this annotator or already voted on.
    """
    if label not in VOTE_LABELS:
        raise Rejected(400, f"label must be one of {', '.join(VOTE_LABELS)}")
    if len(why) > WHY_MAX_CHARS:
        raise Rejected(400, f"'why' is longer than {WHY_MAX_CHARS} characters")
    key = {"annotator_id": annotator.id, "item_id": item_id}

    def work(conn: Connection) -> dict:
        shown = conn.execute(_PRESENTED, key).first()
        if shown is None:
            if conn.execute(_ITEM_EXISTS, key).first() is None:
                raise Rejected(404, "unknown item")
            raise Rejected(409, "this item was not presented to you")
        conn.execute(
            insert(votes).values(
                annotator_id=annotator.id,
                item_id=item_id,
                label=label,
                overlap=shown.overlap,
                why=why,
                created_at=now_iso(),
            )
        )
        return {"progress": _progress(conn, annotator.id)}

    try:
        return _transaction(engine, work)
    except IntegrityError:  # the unique (annotator, item) constraint: a second vote
        raise Rejected(409, "you have voted on this item already") from None


def undo_last(engine: Engine, annotator: Annotator) -> dict:
    """Delete the annotator's latest vote; its item is the next one presented again.

    Raises
    ------
    Rejected
        409 if the annotator has no vote.
    """

    def work(conn: Connection) -> dict:
        row = conn.execute(
            select(votes.c.id, votes.c.item_id, votes.c.label)
            .where(votes.c.annotator_id == annotator.id)
            .order_by(votes.c.id.desc())
            .limit(1)
        ).first()
        if row is None:
            raise Rejected(409, "nothing to undo")
        conn.execute(delete(votes).where(votes.c.id == row.id))
        # Present the item again, as the latest presentation (same overlap flag and order).
        shown = conn.execute(
            delete(presentations)
            .where(
                presentations.c.annotator_id == annotator.id,
                presentations.c.item_id == row.item_id,
            )
            .returning(presentations.c.overlap)
        ).scalar_one()
        conn.execute(
            insert(presentations).values(
                annotator_id=annotator.id,
                item_id=row.item_id,
                overlap=shown,
                presented_at=now_iso(),
            )
        )
        return {
            "item_id": row.item_id,
            "label": row.label,
            "progress": _progress(conn, annotator.id),
        }

    return _transaction(engine, work)


# --- concordance and export -----------------------------------------------------------


def concordance(engine: Engine) -> dict:
    """Vote counts, disagreement on items voted by several annotators, votes by dose.

    Returns
    -------
    dict
        ``annotators``: ``[{"name", "healthy", "sick", "unsure", "total"}]``;
        ``overlap``: ``{"items", "disagree", "disagree_fraction", "items_with_unsure"}``: as in
        section 3.1, counted by :func:`data_prep.concordance.count_disagreement` (an
        annotator's last vote counts): ``items`` counts the items voted by two or more
        annotators with no "unsure" vote, ``disagree`` those of them whose labels are not
        all equal; ``items_with_unsure`` the other overlapping items; ``by_dose``:
        ``[{"dose_s", "healthy", "sick", "unsure"}]``; ``items``: pool size; ``votes``: total
        votes.
    """
    with engine.connect() as conn:
        per_annotator: dict[str, dict[str, int]] = {}
        for name in conn.execute(select(annotators.c.name).order_by(annotators.c.name)).scalars():
            per_annotator[name] = {lab: 0 for lab in VOTE_LABELS}
        rows = conn.execute(
            select(annotators.c.name, votes.c.label, func.count())
            .select_from(votes.join(annotators))
            .group_by(annotators.c.name, votes.c.label)
        )
        for name, label, n in rows:
            per_annotator[name][label] = int(n)
        cast = conn.execute(
            select(votes.c.item_id, annotators.c.name, votes.c.label)
            .select_from(votes.join(annotators))
            .order_by(votes.c.id)
        ).all()
        voters: dict[str, set[str]] = {}
        for item_id, name, _ in cast:
            voters.setdefault(item_id, set()).add(name)
        shared = sum(len(who) >= 2 for who in voters.values())
        decided, disagree = count_disagreement(cast)
        by_dose: dict[float, dict[str, int]] = {}
        rows = conn.execute(
            select(items.c.dose_s, votes.c.label, func.count())
            .select_from(votes.join(items))
            .group_by(items.c.dose_s, votes.c.label)
        )
        for dose, label, n in rows:
            by_dose.setdefault(float(dose), {lab: 0 for lab in VOTE_LABELS})[label] = int(n)
        n_items = conn.execute(select(func.count()).select_from(items)).scalar_one()
    return {
        "annotators": [
            {"name": k, **v, "total": sum(v.values())} for k, v in per_annotator.items()
        ],
        "overlap": {
            "items": decided,
            "disagree": disagree,
            "disagree_fraction": disagree / decided if decided else None,
            "items_with_unsure": shared - decided,
        },
        "by_dose": [{"dose_s": d, **by_dose[d]} for d in sorted(by_dose)],
        "items": int(n_items),
        "votes": len(cast),
    }


def all_votes(engine: Engine) -> list[Vote]:
    """Every vote, oldest first, in the schema of :mod:`data_prep.votes_csv`."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                votes.c.item_id,
                annotators.c.name,
                votes.c.label,
                votes.c.overlap,
                votes.c.created_at,
            )
            .select_from(votes.join(annotators))
            .order_by(votes.c.id)
        )
        return [Vote(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _sqlite_file(url: str) -> Path | None:
    """The SQLite file of a ``--db`` value (a plain path or ``sqlite:///``), else None."""
    if "://" not in url:
        return Path(url)
    if url.startswith("sqlite:///") and url not in ("sqlite:///", "sqlite:///:memory:"):
        return Path(url[len("sqlite:///") :])
    return None


def check_db_file(url: str) -> None:
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


def export_votes(url: str, out: Path) -> int:
    """Write every vote of the database at ``url`` to the votes CSV ``out`` (the
    :mod:`data_prep.votes_csv` schema) and ``OUT_STEM.settings.json`` beside it; return the
    number of votes. Refuses an ``out`` that is a folder, the database or another CSV."""
    check_db_file(url)
    _check_export(out, url)
    engine = open_db(url, create=False)
    votes = all_votes(engine)
    try:
        write_votes(out, votes)
    except OSError as err:
        raise UserError(f"--out {out}: cannot write it ({err.strerror}).") from None
    settings = {"command": "annotate export", "db": str(engine.url), "votes": len(votes)}
    write_settings(out.parent, settings, name=f"{out.stem}.settings.json")
    return len(votes)
