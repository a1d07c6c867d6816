"""Trained weights packaged the Caffe Model Zoo way, with a model card, and checked again.

``deadnet package`` writes into ``models/NAME``:

- ``deploy.prototxt`` and ``NAME.caffemodel`` (a copy of the weights, symlinks resolved);
- ``readme.md``: the Model Zoo's YAML front matter (``name``, ``caffemodel``, ``sha1``,
  ``license``, ``caffe_commit``; also ``caffe_build``, the cache key that
  third_party/caffe/build.sh gave the Caffe build), then the model card: what the net does
  and expects, its training data, the imaging conditions, the test accuracy with its
  interval, the derived solver, and how it was made;
- ``card.json``: the same facts for programs, ``solver.prototxt``: the derived solver of the
  training run, when the run folder has one.

The card is filled from what the training run left (:func:`training_record`): the run
folder beside the weights (``settings.json``, ``solver.prototxt``), the data set it names
(``dataset.json``, ``settings.json``), that data set's experiment (``manifest.csv``; the
simulator's ``settings.json`` when simulated), and an ``evaluation.json``. Whatever cannot
be found is written as "not recorded", never guessed. ``deadnet verify`` checks the sha1
and that Caffe loads the net with the weights and runs it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np

from data_prep.core import paper
from data_prep.core.errors import UserError
from deadnet_caffe import __version__

README = "readme.md"
CARD = "card.json"
DEPLOY = "deploy.prototxt"
SOLVER = "solver.prototxt"
LICENSE = "BSD-2-Clause"  # the project's licence (pyproject.toml), for weights it trained
#: The Caffe source commit this project builds (third_party/caffe/SOURCE: BVLC master of
#: 2018-08-21 as packaged by Debian, version 1.0.0+git20180821.99bd997).
CAFFE_COMMIT = "99bd997"
NOT_RECORDED = "not recorded"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def sha1(path: Path | str) -> str:
    """Hex SHA-1 of a file (the Model Zoo's checksum field)."""
    h = hashlib.sha1()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def find_evaluation(weights: Path, given: Path | None = None) -> Path | None:
    """``given``, else the first ``evaluation.json`` next to the weights: in their folder,
    its ``evaluation/`` subfolder, or the ``evaluation/`` beside it (a demo folder's layout)."""
    if given is not None:
        return given
    run = weights.parent
    for cand in (
        run / "evaluation.json",
        run / "evaluation" / "evaluation.json",
        run.parent / "evaluation" / "evaluation.json",
    ):
        if cand.is_file():
            return cand
    return None


def _conditions(experiment: Path | None) -> dict:
    """Imaging conditions of an experiment: manifest values, simulator settings if any."""
    out = {
        "pixel_size_um": NOT_RECORDED,
        "frame_interval_min": NOT_RECORDED,
        "objective": NOT_RECORDED,
        "cell_type": NOT_RECORDED,
        "source": NOT_RECORDED,
    }
    if experiment is None:
        return out
    from data_prep.core.manifest import read_manifest

    try:
        positions = read_manifest(experiment)
    except UserError:
        positions = []
    if positions:
        px = sorted({p.pixel_size_um for p in positions})
        dt = sorted({p.frame_interval_min for p in positions})
        out["pixel_size_um"] = px[0] if len(px) == 1 else px
        out["frame_interval_min"] = dt[0] if len(dt) == 1 else dt
        out["positions"] = len(positions)
        out["doses_s"] = sorted({p.dose_s for p in positions})
        out["source"] = f"{experiment / 'manifest.csv'}"
    sim = (_json(experiment / "settings.json") or {}).get("settings", {})
    if "optics" in sim and "layout" in sim:
        na = sim["optics"].get("na")
        out["objective"] = (
            f"simulated Zernike phase contrast, NA {na} (the paper's {paper.OBJECTIVE})"
        )
        out["cell_type"] = f"simulated {paper.CELL_TYPE} (agent model, docs/simulator.md)"
        out["simulated"] = True
        out["simulator_seed"] = sim.get("seed")
        out["source"] += f"; simulator settings {experiment / 'settings.json'}"
    return out


def _experiment(dataset: Path | None, recorded: str | None) -> Path | None:
    """The experiment folder that a data set's settings.json names.

    ``deadnet dataset`` records the path as given, so a relative one is relative to the
    folder it ran in, which is not recorded: it is looked for under the data set folder's
    parents, nearest first (the demo writes ``runs/demo/experiment`` and
    ``runs/demo/dataset_A``). None when no such folder holds a manifest.csv.
    """
    if not recorded or dataset is None:
        return None
    path = Path(recorded)
    if path.is_absolute():
        return path
    for base in dataset.resolve().parents:
        if (base / path / "manifest.csv").is_file():
            return base / path
    return None


def training_record(weights: Path | str, evaluation: Path | str | None = None) -> dict:
    """What is known about how ``weights`` were trained and how well they test.

    Returns
    -------
    dict with ``run``, ``dataset``, ``conditions`` (imaging), ``evaluation`` and ``solver``
    entries; each missing fact is :data:`NOT_RECORDED`.
    """
    weights = Path(weights)
    run = weights.parent
    settings = (_json(run / "settings.json") or {}).get("settings", {})
    record: dict = {"run": str(run.resolve()) if settings else NOT_RECORDED}
    dataset = Path(settings["dataset"]) if settings.get("dataset") else None
    ds_card = _json(dataset / "dataset.json") if dataset else None
    ds_settings = (_json(dataset / "settings.json") or {}).get("settings", {}) if dataset else {}
    experiment = _experiment(dataset, ds_settings.get("experiment"))
    if ds_card:
        record["dataset"] = {
            "folder": str(dataset),
            "data_set": ds_card.get("dataset"),
            "counts": ds_card.get("counts"),
            "labels": ds_card.get("labels"),
            "experiment": str(experiment) if experiment else NOT_RECORDED,
        }
    else:
        record["dataset"] = NOT_RECORDED
    record["conditions"] = _conditions(experiment if experiment and experiment.is_dir() else None)
    if settings:
        record["training"] = {
            k: settings.get(k)
            for k in ("solver", "max_iter", "base_lr", "seed", "weights", "paper_iterations")
        }
        record["training"]["derived_from_solver_file"] = settings.get("derived_from_solver_file")
    solver = run / SOLVER
    record["solver"] = str(solver) if settings and solver.is_file() else NOT_RECORDED
    ev_path = find_evaluation(weights, Path(evaluation) if evaluation else None)
    ev = _json(ev_path) if ev_path else None
    if ev_path and ev is None:
        raise UserError(f"{ev_path}: cannot read it as an evaluation.json.")
    if ev is not None:
        missing = [k for k in ("accuracy", "ci_low", "ci_high") if k not in ev]
        if missing:
            raise UserError(f"{ev_path}: not an evaluation.json (no {', '.join(missing)}).")
        record["evaluation"] = {
            "file": str(ev_path),
            **{k: ev.get(k) for k in ("accuracy", "ci_low", "ci_high", "interval_method")},
            "mode": ev.get("primary_mode_label", ev.get("primary_mode")),
            "dataset": ev.get("dataset"),
        }
    else:
        record["evaluation"] = NOT_RECORDED
    return record


def _front_matter(fields: dict) -> str:
    return "---\n" + "".join(f"{k}: {v}\n" for k, v in fields.items()) + "---\n"


def read_front_matter(readme: Path) -> dict[str, str]:
    """The ``key: value`` lines between the first two ``---`` lines of a Model Zoo readme.

    Raises
    ------
    UserError
        No readable readme, or no front matter in it.
    """
    try:
        text = readme.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{readme}: cannot read the Model Zoo readme ({err}).") from None
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---" or "---" not in [s.strip() for s in lines[1:]]:
        raise UserError(f"{readme}: no YAML front matter (a '---' block at the top).")
    end = 1 + [s.strip() for s in lines[1:]].index("---")
    out = {}
    for line in lines[1:end]:
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _unit(value, unit: str) -> str:
    return value if value == NOT_RECORDED else f"{_fmt(value)} {unit}"


def _pct(x) -> str:
    return f"{100 * x:.1f} %" if isinstance(x, (int, float)) else str(x)


def input_side(model: Path | str) -> int:
    """The side of a deploy net's square 1-channel input, from its prototxt.

    Raises
    ------
    UserError
        A net without exactly one N x 1 x S x S input.
    """
    from deadnet_caffe.netspec import load_net_param

    param = load_net_param(model)
    dims = [tuple(s.dim) for la in param.layer if la.type == "Input" for s in la.input_param.shape]
    dims += [tuple(s.dim) for s in param.input_shape]
    if len(dims) != 1 or len(dims[0]) != 4 or dims[0][1] != 1 or dims[0][2] != dims[0][3]:
        raise UserError(f"{model}: the net needs one square 1-channel input (N x 1 x S x S).")
    return int(dims[0][2])


def model_card(name: str, header: dict, record: dict, solver_text: str | None, side: int) -> str:
    """The readme body: the model card in Markdown (see module docstring)."""
    c = record["conditions"]
    ds = record["dataset"]
    ev = record["evaluation"]
    lines = [
        f"# {name}",
        "",
        "DeadNet (Richmond et al., *DeadNet: Identifying Phototoxicity from Label-free "
        "Microscopy Images of Cells using Deep ConvNets*) in Caffe: P(sick) of a cell "
        "population from one phase-contrast crop. Packaged by deadnet-caffe "
        f"{__version__}; published nets: {paper.PUBLISHED_REPO}.",
        "",
        "## Files",
        "",
        f"- `{DEPLOY}`: the deploy net (Input N x 1 x {side} x {side}, Softmax `prob` over "
        f"({', '.join(paper.LABELS[k] for k in sorted(paper.LABELS))})).",
        f"- `{header['caffemodel']}`: the weights, sha1 `{header['sha1']}`.",
        f"- `{CARD}`: this card's facts as JSON."
        + (f" `{SOLVER}`: the derived solver of the training run." if solver_text else ""),
        "",
        "Check the package with `deadnet verify` on this folder; classify with "
        f"`deadnet classify --model {DEPLOY} --weights {header['caffemodel']} IMAGES --out DIR`.",
        "",
        "## Input",
        "",
        f"One {paper.NET_INPUT_PX} px crop per input: the {paper.CROP_PX} px window is "
        "normalised on its own (mean 0, standard deviation 1), then its centre "
        f"{paper.NET_INPUT_PX} px are taken (paper sections 2.3-2.4; deadnet_caffe.infer).",
        "",
        "## Training data",
        "",
    ]
    if isinstance(ds, dict):
        lines.append(f"- data set {ds['data_set']} built in `{ds['folder']}`")
        lines.append(f"- experiment: `{ds['experiment']}`")
        for part, cnt in (ds.get("counts") or {}).items():
            per = ", ".join(f"{k} {v}" for k, v in (cnt.get("per_class") or {}).items())
            lines.append(
                f"- {part}: {cnt.get('crops')} crops ({per}) from {cnt.get('positions')} positions"
            )
    else:
        lines.append(f"- {NOT_RECORDED} (no run folder with settings.json beside the weights)")
    lines += [
        "",
        "## Imaging conditions",
        "",
        f"- pixel size: {_unit(c['pixel_size_um'], 'um at the sample')}",
        f"- frame interval: {_unit(c['frame_interval_min'], 'min')}",
        f"- objective: {c['objective']}",
        f"- cell type: {c['cell_type']}",
        f"- from: {c['source']}",
        "",
        "The net has seen only these conditions; other pixel sizes, objectives or cell "
        "types are outside what it was trained on.",
        "",
        "## Test accuracy",
        "",
    ]
    if isinstance(ev, dict):
        lines.append(
            f"Accuracy {_pct(ev['accuracy'])}, 95 % interval {_pct(ev['ci_low'])} - "
            f"{_pct(ev['ci_high'])} ({ev.get('interval_method')}; {ev.get('mode')}), "
            f"on the test split of `{ev.get('dataset')}`; from `{ev['file']}`."
        )
    else:
        lines.append(
            f"{NOT_RECORDED}: no evaluation.json given (--evaluation) or found beside the "
            "weights. Run `deadnet evaluate` and package again."
        )
    lines += ["", "## Solver", ""]
    if solver_text:
        tr = record.get("training", {})
        lines += [
            f"Derived from `{tr.get('solver')}` by `deadnet train` (max_iter "
            f"{tr.get('max_iter') or 'as in that file'}, base_lr "
            f"{tr.get('base_lr') or 'as in that file'}); what it "
            f"changed: `{json.dumps(tr.get('derived_from_solver_file'))}`.",
            "",
            "```",
            solver_text.rstrip(),
            "```",
        ]
    else:
        lines.append(f"{NOT_RECORDED} (no solver.prototxt in a run folder beside the weights).")
    lines += [
        "",
        "## Build",
        "",
        f"Caffe commit {header['caffe_commit']} (third_party/caffe/SOURCE), build "
        f"`{header['caffe_build']}` (the key of third_party/caffe/build.sh).",
        "",
    ]
    return "\n".join(lines)


def caffe_build() -> str:
    """The folder name of the Caffe build in use, ``caffe-VARIANT-KEY`` (build.sh's key)."""
    from deadnet_caffe.caffe_env import import_caffe

    return Path(import_caffe().__file__).resolve().parent.parent.parent.name


def package(
    weights: Path | str,
    out: Path | str,
    model: Path | str,
    evaluation: Path | str | None = None,
    license_: str = LICENSE,
    overrides: dict | None = None,
) -> dict:
    """Write a Model Zoo folder for ``weights`` into ``out`` (see module docstring).

    Parameters
    ----------
    weights : .caffemodel (a symlink such as a run's latest.caffemodel is followed).
    out : the package folder; its name is the model's name. Written through
        :func:`data_prep.core.outdir.output_dir`.
    model : deploy prototxt that ``weights`` fit.
    evaluation : evaluation.json to take the test accuracy from (default: one found).
    overrides : imaging conditions given by the user (pixel_size_um, objective, cell_type),
        which replace the recorded ones.

    Returns
    -------
    The card (the content of card.json).
    """
    from data_prep.core.outdir import output_dir
    from deadnet_caffe.checks import check_weights

    weights, out, model = Path(weights), Path(out), Path(model)
    name = out.resolve().name
    if not _NAME_RE.match(name):
        raise UserError(
            f"--out {out}: the folder name {name!r} is the model's name; use "
            "letters, digits, '.', '_' and '-'."
        )
    check_weights(model, weights)
    side = input_side(model)
    record = training_record(weights, evaluation)
    for key, value in (overrides or {}).items():
        if value is not None:
            record["conditions"][key] = value
            record["conditions"]["source"] += f"; {key} given on the command line"
    inputs = [weights, weights.resolve(), model]
    if evaluation:
        inputs.append(Path(evaluation))
    with output_dir(out, "package", inputs) as tmp:
        caffemodel = f"{name}.caffemodel"
        shutil.copyfile(weights, tmp / caffemodel)
        shutil.copyfile(model, tmp / DEPLOY)
        solver_text = None
        if record["solver"] != NOT_RECORDED:
            solver_text = Path(record["solver"]).read_text()
            (tmp / SOLVER).write_text(solver_text)
        header = {
            "name": name,
            "caffemodel": caffemodel,
            "sha1": sha1(tmp / caffemodel),
            "license": license_,
            "caffe_commit": CAFFE_COMMIT,
            "caffe_build": caffe_build(),
        }
        card = {"header": header, **record, "weights_source": str(weights.resolve())}
        (tmp / README).write_text(
            _front_matter(header) + "\n" + model_card(name, header, record, solver_text, side)
        )
        (tmp / CARD).write_text(json.dumps(card, indent=2, default=str) + "\n")
    return card


def verify(folder: Path | str) -> dict:
    """Check a Model Zoo folder: the readme's sha1 against the caffemodel, then that Caffe
    loads ``deploy.prototxt`` with the weights and gives probabilities for a test input.

    Returns
    -------
    ``{"name", "caffemodel", "sha1", "probs"}``; ``probs`` is the softmax (C,) of a constant
    zero input.

    Raises
    ------
    UserError
        One sentence naming the file and the problem (no readme, a missing field, a
        checksum that differs, weights that do not fit the net).
    """
    from deadnet_caffe.infer import DeployNet

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such package folder.")
    header = read_front_matter(folder / README)
    missing = [k for k in ("name", "caffemodel", "sha1") if not header.get(k)]
    if missing:
        raise UserError(f"{folder / README}: the front matter lacks {', '.join(missing)}.")
    caffemodel = folder / header["caffemodel"]
    if not caffemodel.is_file():
        raise UserError(f"{caffemodel}: the caffemodel that {README} names is missing.")
    got = sha1(caffemodel)
    if got != header["sha1"].lower():
        raise UserError(
            f"{caffemodel}: sha1 {got} differs from {header['sha1']} in {README} "
            "(a corrupted or changed file)."
        )
    deploy = folder / DEPLOY
    if not deploy.is_file():
        raise UserError(f"{deploy}: the package has no deploy net.")
    net = DeployNet(deploy, caffemodel)
    shape = net.net.blobs[net.input].data.shape
    probs = net.forward(np.zeros((1, *shape[2:]), np.float32))[0]
    if not (np.all(np.isfinite(probs)) and abs(float(probs.sum()) - 1) < 1e-4):
        raise UserError(f"{caffemodel}: the net gives {probs} for a test input, not probabilities.")
    return {
        "name": header["name"],
        "caffemodel": str(caffemodel),
        "sha1": got,
        "probs": probs.tolist(),
    }
