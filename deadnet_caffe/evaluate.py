"""Evaluate a trained net on a data set's test LMDB (paper sections 2.5 and 3.1, Figure 3).

Two modes, each labelled in every output:

- ``published_val``: the published val net as Caffe ran it (BatchNorm ``use_global_stats:
  false``, i.e. normalised with the statistics of each batch of 20 test crops, taken in LMDB
  order; the last short batch is filled from the start of the LMDB, as Caffe's Data layer
  wraps). This is how the published test accuracies were measured (released-settings.md,
  disagreement 6) and is the *primary* mode.
- ``global_stats``: the same net with BatchNorm using its running averages, as the deploy
  net (prototxt/deploy.prototxt) does; each crop's result is independent of its batch.

Section 2.5's statistics, every reading (docs/FAITHFULNESS.md, "Statistics"): the same 100
virtual batches of 10 healthy + 10 sick test crops are classified two ways, ``batch_statistics``
(each virtual batch run through the published val net as one batch of 20: what the paper's
Caffe val net did with a batch of 20, the default) and ``fixed_pass`` (taken from the
consecutive-batch pass below); each table is bootstrapped two ways (:data:`stats.READINGS`:
the 2000 classifications, the default, or the 100 batch accuracies). All four are in
``evaluation.json`` under ``readings``; the headline ``accuracy`` is the default pair
(:data:`DEFAULT_SOURCE`, :data:`stats.DEFAULT_READING`). The batches themselves are kept:
``virtual_batch_records`` (record numbers in LMDB order, as in ``predictions.csv``) and per
mode ``virtual_batch_correct`` (0/1 per crop and source).

Per mode: accuracy with the section 2.5 virtual-batch bootstrap BCa interval, accuracy
over all crops (Clopper-Pearson), confusion matrix, accuracy per dose and per position
(where the data set says each record's dose and position), and the unexposed-cells check
of section 3.1 (fraction of dose-0 crops called healthy).

Per-record metadata is read from ``DATASET/test_index.csv`` (columns ``key`` = LMDB key,
``position`` = plate/well/position, ``dose_s``). Without it, per-dose / per-position results
and the unexposed check are reported as unavailable.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import lmdb
import numpy as np

from data_prep.core import outdir, paper, runinfo
from data_prep.core.checks import read_text
from data_prep.core.datum import check_lmdb, iter_datums, read_datum, test_transform
from data_prep.core.errors import UserError
from data_prep.core.progress import progress_bar
from deadnet_caffe import caffe_env, netspec, stats

MODES = ("published_val", "global_stats")
PRIMARY_MODE = "published_val"
MODE_LABELS = {
    "published_val": "published val mode (BatchNorm batch statistics, batch of 20)",
    "global_stats": "global-statistics mode (BatchNorm running averages, as deploy)",
}
INDEX_NAME = "test_index.csv"
CARD_NAME = "dataset.json"
JSON_NAME = "evaluation.json"
REPORT_NAME = "report.md"
PREDICTIONS_NAME = "predictions.csv"
HEALTHY, SICK = 0, 1
SOURCES = ("batch_statistics", "fixed_pass")
DEFAULT_SOURCE = "batch_statistics"


@dataclass
class Transform:
    """The TEST Data layer's transform: centre crop, then (v - mean) * scale."""

    crop: int
    mean: float
    scale: float
    batch: int

    def __call__(self, v: np.ndarray) -> np.ndarray:
        """(C, H, W) stored values -> (C, crop, crop) float32 net input (Caffe's TEST crop)."""
        return test_transform(v, self.crop, self.mean, self.scale)


@dataclass
class TestRecords:
    """The test LMDB's keys and labels, in LMDB order, with per-record metadata if known."""

    keys: list[str]
    labels: np.ndarray  # (N,) int64
    position: list[str | None] = field(default_factory=list)
    dose: np.ndarray | None = None  # (N,) float64 seconds, NaN where unknown
    metadata_source: str = "none"


def read_records(dataset: Path) -> TestRecords:
    """Keys and labels of ``dataset/test.lmdb`` plus ``test_index.csv`` metadata if present."""
    path = dataset / "test.lmdb"
    check_lmdb(path)
    keys, labels = [], []
    for key, _, label in iter_datums(path):
        keys.append(key)
        labels.append(label)
    if not keys:
        raise UserError(f"{path} holds no records.")
    rec = TestRecords(keys, np.asarray(labels, dtype=np.int64))
    bad = sorted(set(rec.labels.tolist()) - {HEALTHY, SICK})
    if bad:
        raise UserError(f"{path} holds labels {bad}; only 0 (healthy) and 1 (sick) are allowed.")
    index = dataset / INDEX_NAME
    rec.position = [None] * len(keys)
    rec.dose = np.full(len(keys), np.nan)
    if index.is_file():
        text = read_text(index, "test index")
        rows = {r["key"]: r for r in csv.DictReader(io.StringIO(text, newline="")) if "key" in r}
        if not rows:
            raise UserError(f"{index} has no 'key' column (the test LMDB's record keys).")
        for i, k in enumerate(keys):
            row = rows.get(k)
            if row is None:
                continue
            rec.position[i] = row.get("position") or None
            dose = row.get("dose_s", row.get("dose"))
            if dose not in (None, ""):
                rec.dose[i] = float(dose)
        rec.metadata_source = str(index)
    elif (dataset / CARD_NAME).is_file():
        _metadata_from_card(dataset / CARD_NAME, rec)
    return rec


def _metadata_from_card(card_path: Path, rec: TestRecords) -> None:
    """Doses (and positions) of Data Set A records implied by the data set card alone.

    Data Set A labels whole positions (paper section 2.2), so a test record's label names
    the set of test positions it can come from; where those share one dose (or are one
    position), every record of that label gets it. Data Set B labels crops, so nothing
    follows from its card.
    """
    try:
        card = json.loads(card_path.read_text())
        positions = card["positions"]
    except (OSError, ValueError, KeyError):
        raise UserError(f"{card_path} is not a data set card (no 'positions').") from None
    if card.get("dataset") != "A":
        return
    names = {v: int(k) for k, v in card.get("labels", {"0": "healthy", "1": "sick"}).items()}
    test = {k: p for k, p in positions.items() if p.get("part") == "test"}
    inferred = []
    for name, label in names.items():
        mine = [k for k, p in test.items() if p.get("label") == name]
        doses = {float(test[k]["dose_s"]) for k in mine}
        mask = rec.labels == label
        if len(doses) == 1:
            rec.dose[mask] = doses.pop()
            inferred.append(f"{name}: dose")
        if len(mine) == 1:
            for i in np.flatnonzero(mask):
                rec.position[i] = mine[0]
            inferred.append(f"{name}: position")
    if inferred:
        rec.metadata_source = (
            f"{card_path} (Data Set A: implied by the label where one dose / position per "
            f"class; {'; '.join(inferred)})"
        )


def transform_of(net_param) -> Transform:
    """The TEST-phase Data layer's transform and batch size of a train/val net."""
    for layer in net_param.layer:
        phases = [r.phase for r in layer.include if r.HasField("phase")]
        if layer.type == "Data" and (not phases or phases[0] == 1):
            tp = layer.transform_param
            mean = tp.mean_value[0] if tp.mean_value else 0.0
            return Transform(
                tp.crop_size, float(mean), tp.scale or 1.0, layer.data_param.batch_size
            )
    raise UserError(
        f"net '{net_param.name}' has no TEST-phase Data layer to take the transform from."
    )


def eval_net_param(net_param, transform: Transform, global_stats: bool):
    """The TEST net with its Data layer replaced by an Input layer of (batch, C, crop, crop).

    Returns (NetParameter, name of the score blob that feeds the loss).
    """
    out = type(net_param)()
    out.CopyFrom(net_param)
    del out.layer[:]
    score = None
    for layer in net_param.layer:
        phases = [r.phase for r in layer.include if r.HasField("phase")]
        if phases and phases[0] != 1:
            continue
        if layer.type == "Data":
            inp = out.layer.add(name=layer.name, type="Input")
            inp.top.extend(layer.top)
            c = transform.crop
            inp.input_param.shape.add(dim=[transform.batch, 1, c, c])
            inp.input_param.shape.add(dim=[transform.batch])
            continue
        new = out.layer.add()
        new.CopyFrom(layer)
        if layer.type == "BatchNorm":
            new.batch_norm_param.use_global_stats = global_stats
        if layer.type == "SoftmaxWithLoss":
            score = layer.bottom[0]
    if score is None:
        raise UserError(f"net '{net_param.name}' has no SoftmaxWithLoss layer to find the score.")
    return out, score


def predict(net, score: str, dataset: Path, transform: Transform, bar=None) -> np.ndarray:
    """P(sick) for every test record, in LMDB order, with consecutive batches.

    Records are streamed from the LMDB; the last short batch is filled with the first
    records (Caffe's Data layer wraps around the same way) and only its new results kept.

    Returns
    -------
    (N,) float64
    """
    b = transform.batch
    probs: list[np.ndarray] = []
    first: list[tuple[np.ndarray, int]] = []

    def run(batch: list[tuple[np.ndarray, int]]) -> np.ndarray:
        net.blobs["data"].data[...] = np.stack([transform(a) for a, _ in batch])
        if "label" in net.blobs:
            net.blobs["label"].data[...] = [lab for _, lab in batch]
        out = net.forward()
        logits = out[score] if score in out else net.blobs[score].data
        logits = logits.reshape(b, -1).astype(np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e[:, SICK] / e.sum(axis=1)

    batch = []
    for _, v, label in iter_datums(dataset / "test.lmdb"):
        batch.append((v, label))
        if len(first) < b:
            first.append(batch[-1])
        if len(batch) == b:
            probs.append(run(batch))
            batch = []
            if bar is not None:
                bar.update(b)
    if batch:
        keep = len(batch)
        while len(batch) < b:  # wrap around: the first records fill the batch
            batch.append(first[(len(batch) - keep) % len(first)])
        probs.append(run(batch)[:keep])
        if bar is not None:
            bar.update(keep)
    return np.concatenate(probs)


def predict_batches(
    net,
    score: str,
    dataset: Path,
    keys: list[str],
    idx: np.ndarray,
    transform: Transform,
) -> np.ndarray:
    """P(sick) of each crop of each virtual batch, every batch one forward pass of the net.

    Parameters
    ----------
    keys : list of str
        LMDB key of each test record.
    idx : (n_batches, batch) int
        Records of each virtual batch (:func:`stats.virtual_batch_indices`); ``batch`` must be
        the net's batch size.

    Returns
    -------
    (n_batches, batch) float64
    """
    out = np.empty(idx.shape)
    path = dataset / "test.lmdb"
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        for b, row in enumerate(idx):
            crops = [read_datum(txn, path, keys[i].encode()) for i in row]
            net.blobs["data"].data[...] = np.stack([transform(a) for a, _ in crops])
            if "label" in net.blobs:
                net.blobs["label"].data[...] = [lab for _, lab in crops]
            res = net.forward()
            logits = (res[score] if score in res else net.blobs[score].data).reshape(len(row), -1)
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            out[b] = e[:, SICK] / e.sum(axis=1)
    env.close()
    return out


def readings(
    tables: dict[str, np.ndarray],
    rng: np.random.Generator,
    n_resamples: int,
    counts: tuple[int, int],
) -> dict[str, dict[str, dict]]:
    """Every reading of section 2.5: source -> bootstrap reading -> interval dict.

    ``tables`` maps a source (:data:`SOURCES`) to its (n_batches, 20) bool table of
    correct classifications; ``counts`` (correct, evaluated test crops) for the degenerate
    fallback.
    """
    return {
        source: {
            reading: stats.batch_table_accuracy(table, rng, reading, n_resamples, counts).as_dict()
            for reading in stats.READINGS
        }
        for source, table in tables.items()
    }


def _group(values: list, correct: np.ndarray) -> dict:
    groups: dict = defaultdict(list)
    for v, c in zip(values, correct, strict=True):
        if v is not None:
            groups[v].append(bool(c))
    out = {}
    for v in sorted(groups):
        k, n = sum(groups[v]), len(groups[v])
        ci = stats.clopper_pearson(k, n)
        out[str(v)] = {
            "n": n,
            "correct": k,
            "accuracy": k / n,
            "ci_low": ci.low,
            "ci_high": ci.high,
        }
    return out


def unexposed_check(
    rec: TestRecords,
    pred: np.ndarray,
    rng: np.random.Generator,
    n_resamples: int,
    annotators: dict | None,
) -> dict:
    """Section 3.1: fraction of dose-0 test crops the net calls healthy, with a 95% interval."""
    mask = rec.dose == 0
    out = {
        "paper_net_fraction_healthy": paper.PAPER_UNEXPOSED_NET,
        "paper_experts_fraction_healthy": paper.PAPER_UNEXPOSED_HEALTHY[0]
        / paper.PAPER_UNEXPOSED_HEALTHY[1],
        "annotators": annotators,
    }
    if not mask.any():
        out["available"] = False
        out["why"] = "no test record with dose 0 is known (see test_index.csv)"
        return out
    healthy = (pred[mask] == HEALTHY).astype(float)
    ci = stats.bca(healthy, rng, n_resamples)
    out.update(
        available=True,
        n=int(mask.sum()),
        fraction_healthy=ci.estimate,
        ci_low=ci.low,
        ci_high=ci.high,
        interval_method=ci.method,
    )
    return out


def annotator_fraction(votes_csv: Path, rec: TestRecords) -> dict | None:
    """Annotators' fraction of 'healthy' votes on items of dose-0 positions (section 3.1).

    Positions' doses come from the test index, so only test positions count; 'unsure'
    votes are left out.
    """
    from data_prep.votes_csv import Item

    dose_of = {p: d for p, d in zip(rec.position, rec.dose, strict=True) if p is not None}
    if not votes_csv.is_file():
        raise UserError(f"{votes_csv} does not exist.")
    k = n = 0
    for row in csv.DictReader(io.StringIO(read_text(votes_csv, "votes CSV"), newline="")):
        try:
            pos = Item.parse(row["item_id"]).position_key
        except (KeyError, ValueError, TypeError):
            raise UserError(f"{votes_csv} is not a votes.csv (item_id column).") from None
        if dose_of.get(pos) == 0 and row.get("label") in ("healthy", "sick"):
            n += 1
            k += row["label"] == "healthy"
    if n == 0:
        return {"n": 0, "why": "no healthy/sick vote on a dose-0 test position"}
    ci = stats.clopper_pearson(k, n)
    return {
        "n": n,
        "healthy": k,
        "fraction_healthy": k / n,
        "ci_low": ci.low,
        "ci_high": ci.high,
        "interval_method": ci.method,
        "source": str(votes_csv),
    }


def mode_results(
    rec: TestRecords,
    probs: np.ndarray,
    rng: np.random.Generator,
    n_resamples: int,
    annotators: dict | None,
    tables: dict[str, np.ndarray] | None,
) -> dict:
    """All numbers of one mode, for the JSON report.

    ``tables``: source -> (n_batches, 20) bool correct classifications of the virtual
    batches (:func:`readings`); None if the test set lacks a class.
    """
    pred = (probs >= 0.5).astype(np.int64)
    correct = pred == rec.labels
    conf = np.zeros((2, 2), dtype=int)
    np.add.at(conf, (rec.labels, pred), 1)
    counts = (int(correct.sum()), correct.size)
    read = readings(tables, rng, n_resamples, counts) if tables else {}
    if read:
        source = DEFAULT_SOURCE if DEFAULT_SOURCE in read else "fixed_pass"
        vb = stats.Interval(**read[source][stats.DEFAULT_READING])
    else:  # one class only: no class-balanced batches; plain accuracy with an exact interval
        source = None
        vb = stats.clopper_pearson(int(correct.sum()), correct.size)
        vb.method += " (test set holds one class only; virtual batches impossible)"
    allc = stats.clopper_pearson(int(correct.sum()), correct.size)
    dose = [None if np.isnan(d) else float(d) for d in rec.dose]
    return {
        "label": None,
        "accuracy": vb.estimate,
        "ci_low": vb.low,
        "ci_high": vb.high,
        "interval_method": vb.method,
        "virtual_batch_source": source,
        "readings": read,
        "virtual_batch_correct": {k: t.astype(int).tolist() for k, t in (tables or {}).items()},
        "accuracy_all_crops": allc.as_dict(),
        "n": int(correct.size),
        "correct": int(correct.sum()),
        "confusion_matrix": {
            "rows_true_cols_predicted": ["healthy", "sick"],
            "counts": conf.tolist(),
        },
        "per_dose": _group(dose, correct),
        "per_position": _group(rec.position, correct),
        "unexposed": unexposed_check(rec, pred, rng, n_resamples, annotators),
    }


@dataclass
class EvalSettings:
    """What ``deadnet evaluate`` was asked to do (saved beside its outputs)."""

    weights: str
    dataset: str
    out: str
    net: str | None = None
    votes: str | None = None
    seed: int = 0
    resamples: int = paper.BOOTSTRAP_RESAMPLES
    gallery: int = 8
    gpu: int | None = None
    figure_format: tuple[str, ...] = ("png",)


def default_net(weights: Path) -> Path:
    """The net beside the weights (a run folder's train_val.prototxt), else Data Set A's."""
    for p in (
        weights.parent / "train_val.prototxt",
        netspec.published("dataset_a/train_val.prototxt"),
    ):
        if p.is_file():
            return p
    raise UserError(f"no train_val.prototxt beside {weights}; pass --net.")


def evaluate(s: EvalSettings, progress: bool | None = None) -> dict:
    """Run both modes, write JSON, Markdown, predictions CSV and galleries into ``s.out``."""
    from deadnet_caffe import gallery

    weights, dataset = Path(s.weights), Path(s.dataset)
    if not weights.is_file():
        raise UserError(f"{weights} does not exist.")
    net_path = Path(s.net) if s.net else default_net(weights)
    caffe_env.set_device(s.gpu)
    net_param = netspec.load_net_param(net_path)
    transform = transform_of(net_param)
    _, shape = check_lmdb(dataset / "test.lmdb")
    if transform.crop and min(shape[1:]) < transform.crop:
        raise UserError(
            f"{dataset / 'test.lmdb'} holds {shape[2]} x {shape[1]} px crops, smaller than the "
            f"crop_size {transform.crop} of {net_path}."
        )
    rec = read_records(dataset)
    annotators = annotator_fraction(Path(s.votes), rec) if s.votes else None
    inputs = [weights, dataset, net_path, *([s.votes] if s.votes else [])]
    with outdir.output_dir(s.out, "evaluate", inputs) as tmp:
        rng = np.random.default_rng(s.seed)
        both = all((rec.labels == c).any() for c in (HEALTHY, SICK))
        idx = stats.virtual_batch_indices(rec.labels, rng) if both else None
        results, probs = {}, {}
        for mode in MODES:
            param, score = eval_net_param(net_param, transform, mode == "global_stats")
            net = netspec.net_from_param(param, "TEST", weights, name=str(net_path))
            with progress_bar(
                total=len(rec.keys), desc=mode, unit="crop", progress=progress
            ) as bar:
                probs[mode] = predict(net, score, dataset, transform, bar)
            tables = None
            if idx is not None:
                tables = {"fixed_pass": ((probs[mode] >= 0.5) == rec.labels)[idx]}
                if mode == "published_val" and idx.shape[1] == transform.batch:
                    p = predict_batches(net, score, dataset, rec.keys, idx, transform)
                    tables["batch_statistics"] = (p >= 0.5) == rec.labels[idx]
            results[mode] = mode_results(rec, probs[mode], rng, s.resamples, annotators, tables)
            results[mode]["label"] = MODE_LABELS[mode]
            del net
        primary = results[PRIMARY_MODE]
        doc = {
            "accuracy": primary["accuracy"],
            "ci_low": primary["ci_low"],
            "ci_high": primary["ci_high"],
            "primary_mode": PRIMARY_MODE,
            "primary_mode_label": MODE_LABELS[PRIMARY_MODE],
            "interval_method": primary["interval_method"],
            "statistics": (
                f"section 2.5: {paper.BOOTSTRAP_VIRTUAL_BATCHES} virtual batches of "
                f"{paper.BOOTSTRAP_PER_CLASS} healthy + {paper.BOOTSTRAP_PER_CLASS} sick crops "
                f"({primary['virtual_batch_source']}), {s.resamples} bootstrap resamples of their "
                f"{stats.DEFAULT_READING}, {paper.CONFIDENCE_LEVEL:.0%} BCa; every reading under "
                "modes.*.readings"
            ),
            "readings": primary["readings"],
            "virtual_batch_records": None if idx is None else idx.tolist(),
            "weights": str(weights),
            "net": str(net_path),
            "dataset": str(dataset),
            "metadata_source": rec.metadata_source,
            "modes": results,
        }
        (tmp / JSON_NAME).write_text(json.dumps(doc, indent=2) + "\n")
        _write_predictions(tmp / PREDICTIONS_NAME, rec, probs)
        figures = gallery.draw_galleries(
            tmp, dataset, rec, probs[PRIMARY_MODE], transform, s.gallery, s.figure_format
        )
        (tmp / REPORT_NAME).write_text(markdown(doc, figures))
        runinfo.write_settings(tmp, vars(s))
    return doc


def _write_predictions(path: Path, rec: TestRecords, probs: dict[str, np.ndarray]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "key",
                "label",
                "position",
                "dose_s",
                *[f"p_sick_{m}" for m in MODES],
                *[f"pred_{m}" for m in MODES],
            ]
        )
        for i, k in enumerate(rec.keys):
            dose = "" if np.isnan(rec.dose[i]) else rec.dose[i]
            w.writerow(
                [
                    k,
                    rec.labels[i],
                    rec.position[i] or "",
                    dose,
                    *[f"{probs[m][i]:.6f}" for m in MODES],
                    *[int(probs[m][i] >= 0.5) for m in MODES],
                ]
            )


def _pct(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f}%"


def markdown(doc: dict, figures: list[str]) -> str:
    """The human-readable report of an evaluation ``doc``."""
    lines = [
        "# DeadNet evaluation",
        "",
        f"- weights: `{doc['weights']}`",
        f"- net: `{doc['net']}`",
        f"- dataset: `{doc['dataset']}` (metadata: {doc['metadata_source']})",
        f"- statistics: {doc['statistics']}",
        "",
        f"**Primary ({doc['primary_mode_label']}): accuracy {_pct(doc['accuracy'])}, "
        f"95% CI {_pct(doc['ci_low'])} - {_pct(doc['ci_high'])}** ({doc['interval_method']}).",
        f"Paper: Data Set A {_pct(paper.PAPER_ACCURACY_A)}, Data Set B "
        f"{_pct(paper.PAPER_ACCURACY_B)} (section 3.1).",
        "",
    ]
    for mode, r in doc["modes"].items():
        c = r["confusion_matrix"]["counts"]
        a = r["accuracy_all_crops"]
        lines += [
            f"## {r['label']} (`{mode}`)",
            "",
            f"- virtual-batch accuracy {_pct(r['accuracy'])} "
            f"[{_pct(r['ci_low'])}, {_pct(r['ci_high'])}] ({r['interval_method']})",
            f"- all {r['n']} crops: {r['correct']} correct = {_pct(a['estimate'])} "
            f"[{_pct(a['low'])}, {_pct(a['high'])}] (Clopper-Pearson)",
            *(
                f"- reading {src} / {rd}: {_pct(v['estimate'])} "
                f"[{_pct(v['low'])}, {_pct(v['high'])}]"
                for src, per in r["readings"].items()
                for rd, v in per.items()
            ),
            "",
            "| true \\ predicted | healthy | sick |",
            "|---|---|---|",
            f"| healthy | {c[0][0]} | {c[0][1]} |",
            f"| sick | {c[1][0]} | {c[1][1]} |",
            "",
        ]
        for title, key in (("dose (s)", "per_dose"), ("position", "per_position")):
            if not r[key]:
                lines += [f"Per {title}: not available (no test_index.csv metadata).", ""]
                continue
            lines += [f"| {title} | n | accuracy | 95% CI |", "|---|---|---|---|"]
            lines += [
                f"| {k} | {v['n']} | {_pct(v['accuracy'])} | {_pct(v['ci_low'])} - "
                f"{_pct(v['ci_high'])} |"
                for k, v in r[key].items()
            ]
            lines.append("")
        u = r["unexposed"]
        if u.get("available"):
            lines.append(
                f"Unexposed cells (section 3.1): net calls {_pct(u['fraction_healthy'])} "
                f"of {u['n']} dose-0 crops healthy [{_pct(u['ci_low'])}, "
                f"{_pct(u['ci_high'])}] ({u['interval_method']}); paper: net "
                f"{_pct(u['paper_net_fraction_healthy'])}, experts "
                f"{_pct(u['paper_experts_fraction_healthy'])}."
            )
            if u["annotators"] and u["annotators"].get("n"):
                an = u["annotators"]
                lines.append(
                    f"Annotators here: {_pct(an['fraction_healthy'])} of {an['n']} "
                    f"votes healthy [{_pct(an['ci_low'])}, {_pct(an['ci_high'])}]."
                )
        else:
            lines.append(f"Unexposed cells (section 3.1): not available ({u['why']}).")
        lines.append("")
    lines += [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"
