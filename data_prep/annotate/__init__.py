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
  concordance and export to ``votes.csv`` (:mod:`data_prep.votes`);
- :mod:`.server`: a threaded stdlib HTTP server with a JSON API and the static page in
  ``static/``.
"""
