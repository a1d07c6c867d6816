"""The expert annotation web app for Data Set B (paper section 2.2).

"we constructed a javascript-based website that presented images at random. Experts were
asked to categorize each 10-frame image sequence as Healthy, Sick or Unsure and responses
were logged in an SQL database. To ensure annotation overlap, every 5th image presented to
the annotator was selected from a pool of images that were already scored by another
annotator."

- :mod:`.pool`: the items (256 px crops x 10 consecutive frames) of a raw experiment and
  their frames rendered as 8-bit PNGs;
- :mod:`.db`: the SQL schema (SQLAlchemy Core), annotators with hashed secret tokens, the
  presentation rule (random, every 5th item from the already-scored pool), votes, undo,
  concordance and export to ``votes.csv`` (:mod:`data_prep.votes_csv`);
- :mod:`.server`: a threaded stdlib HTTP server with a JSON API and the static page in
  ``static/``.

Running it
----------
::

    deadnet annotate add-annotator alice --db runs/annotations.sqlite   # prints alice's token
    deadnet annotate serve --experiment runs/sim --db runs/annotations.sqlite --port 8080
    deadnet annotate export --db runs/annotations.sqlite --out runs/votes.csv

Each annotator opens ``http://HOST:PORT/`` and pastes their token once (kept in the
browser's local storage). ``--db`` takes any SQLAlchemy URL: SQLite needs nothing more;
for a team server use PostgreSQL (``--db postgresql+psycopg://user@dbhost/deadnet`` after
``pip install psycopg``, which this project does not pin). The server listens on
127.0.0.1 by default; to annotate over a network, put it behind an HTTPS reverse proxy,
since tokens travel in request headers (any other ``--host``, such as 0.0.0.0, gets a
warning on stderr). An annotator is served the frames of the items presented to them
only. The server refuses malformed requests with a 4xx JSON answer, closes connections
that stall for 30 s and serves at most 100 at once (see :mod:`.server`).
"""
