"""The exported net as a bioimage.io model package (format 0.5), runnable in deepImageJ,
ilastik, napari and bioimageio.core without Caffe.

Layout of the package folder (``rdf.yaml`` names every file, each with its SHA-256):

- ``deadnet.onnx``: the ONNX net of :mod:`deadnet_caffe.onnx_export` with one node in front,
  a ``Slice`` that takes the centre ``side`` px of the window (Caffe's TEST centre crop);
- ``test_input.npy`` / ``test_output.npy``: one raw window (1, 1, w, w) float32 cut from a
  check image, and the Caffe net's softmax (1, C) for it, computed by pycaffe after the
  toolkit's own normalisation; ``bioimageio test`` reproduces it through bioimage.io's
  preprocessing and ONNX Runtime, and must agree to 1e-4 (``reproducibility_tolerance``);
- ``sample_input.png``: the same window for display, ``sample_output.tif`` its output (the
  FAIR samples of bioimage.io); ``cover.png``; ``README.md``; ``LICENSE``.

The per-crop normalisation, expressed in bioimage.io's terms:

- expressible: the training's variance normalisation of each 256 px window (mean 0,
  standard deviation 1 over the window's pixels; :func:`data_prep.core.normalize.
  variance_normalize`) is bioimage.io's ``zero_mean_unit_variance`` over the axes ``y, x``
  of each sample. The input is therefore the *raw* 256 px window, not the 220 px crop:
  normalising the crop alone would give other numbers;
- not expressible exactly: bioimage.io divides by ``std + eps`` (eps must be positive; we
  write 1e-6) where the toolkit divides by ``std`` and maps a constant window
  (std < 1e-6) to zeros. For camera data (std of tens to thousands of counts) the two differ
  by about 1e-9 relative; for a constant window the toolkit gives zeros and bioimage.io
  gives zeros too (x - mean = 0). Windows of other sizes than 256 px (the rest of a large
  image) are the caller's job: bioimage.io tiles a large image into windows but has no rule
  that normalises each tile on its own, so the input axes are fixed at 256 x 256 px;
- the Model Zoo's float range transform of the published nets (``(v - 32767) x 0.00025``)
  is not needed: it undoes the storage encoding of the LMDBs, not a property of images.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from data_prep.core import paper
from data_prep.core.errors import UserError
from deadnet_caffe import __version__

FORMAT_VERSION = "0.5.4"
ONNX_NAME = "deadnet.onnx"
EPS = 1e-6  # bioimage.io's zero_mean_unit_variance eps (std + eps); ours is MIN_STD
TEST_TOLERANCE = 1e-4  # absolute, on the softmax (issue 19's agreement)


def with_centre_crop(model, window: int, side: int):
    """``model`` with a new input ``window`` (batch, 1, w, w) and a centre ``Slice`` to the
    old input (batch, 1, side, side): Caffe's TEST-phase centre crop inside the graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    old = g.input[0].name
    off = (window - side) // 2
    consts = {
        "crop/starts": [off, off],
        "crop/ends": [off + side, off + side],
        "crop/axes": [2, 3],
    }
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in consts.items()]
    node = helper.make_node("Slice", ["window", *consts], [old], name="centre_crop")
    graph = helper.make_graph(
        [node, *g.node],
        g.name,
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", 1, window, window])],
        list(g.output),
        [*inits, *g.initializer],
    )
    out = helper.make_model(
        graph,
        opset_imports=list(model.opset_import),
        producer_name="deadnet-caffe",
        ir_version=model.ir_version,
    )
    onnx.checker.check_model(out)
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _display(window: np.ndarray) -> np.ndarray:
    """(h, w) raw window -> uint8 grey with a 1-99 percentile stretch."""
    lo, hi = np.percentile(window, [1, 99])
    return (np.clip((window - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def _cover(window: np.ndarray, probs: np.ndarray, path: Path) -> None:
    """A 2:1 cover: the test window and a bar of its P(sick) (what the model returns)."""
    from PIL import Image, ImageDraw

    side = 256
    img = Image.new("RGB", (2 * side, side), "white")
    img.paste(Image.fromarray(_display(window)).resize((side, side)).convert("RGB"), (0, 0))
    d = ImageDraw.Draw(img)
    p = float(probs[1])
    d.rectangle((side + 40, 200, side + 40 + int(176 * p), 224), fill=(200, 40, 40))
    d.rectangle((side + 40, 200, side + 216, 224), outline="black")
    d.text((side + 40, 40), "DeadNet (Caffe -> ONNX)", fill="black")
    d.text((side + 40, 70), "phase contrast crop ->", fill="black")
    d.text((side + 40, 90), "P(healthy), P(sick)", fill="black")
    d.text((side + 40, 180), f"P(sick) = {p:.3f}", fill="black")
    img.save(path)


def _readme(name: str, window: int, side: int, card: dict | None) -> str:
    acc = ""
    ev = (card or {}).get("evaluation")
    if isinstance(ev, dict):
        acc = (
            f"Test accuracy of these weights: {100 * ev['accuracy']:.1f} % (95 % interval "
            f"{100 * ev['ci_low']:.1f} - {100 * ev['ci_high']:.1f} %, {ev.get('mode')}).\n\n"
        )
    cond = (card or {}).get("conditions") or {}
    px = cond.get("pixel_size_um")
    px = f"{px:g} um" if isinstance(px, (int, float)) else "not recorded"
    return f"""# {name}

DeadNet (Richmond et al.): P(sick) of the cells in one phase-contrast crop, from phototoxic
light damage. Converted from Caffe by deadnet-caffe {__version__} (`deadnet export`).

{acc}## Input

One raw phase-contrast window of {window} x {window} px (axes b, c, y, x; one channel),
at the conditions the net was trained on (pixel size {px}; objective
{cond.get("objective", "not recorded")}; cells {cond.get("cell_type", "not recorded")}).
Preprocessing `zero_mean_unit_variance` over y, x normalises each window on its own, as in
training; the net itself takes the centre {side} x {side} px.

## Output

`prob`: softmax over (healthy, sick), shape (b, 2).

## What bioimage.io cannot express

bioimage.io divides by `std + {EPS:g}`, the toolkit by `std` (a constant window becomes
zeros in both). A larger image must be cut into {window} px windows by the caller, each
normalised on its own: bioimage.io has no per-tile normalisation rule.

# Validation

`test_output.npy` is the Caffe net's own output (pycaffe, the toolkit's normalisation) for
`test_input.npy`; `bioimageio test` reproduces it within {TEST_TOLERANCE:g} (absolute).
`deadnet export` also compares Caffe and ONNX Runtime on its check crops (export.json).
"""


def write_package(
    folder: Path,
    onnx_model,
    window_raw: np.ndarray,
    expected: np.ndarray,
    side: int,
    name: str,
    card: dict | None = None,
) -> Path:
    """Write the bioimage.io package into ``folder`` (created); return its ``rdf.yaml``.

    Parameters
    ----------
    onnx_model : the converted deploy net (input (batch, 1, side, side)).
    window_raw : (w, w) raw window, w >= side, the test input.
    expected : (C,) Caffe softmax for ``window_raw`` (after the toolkit's normalisation).
    card : the Model Zoo card (modelzoo.training_record), for conditions and accuracy.
    """
    import onnx
    import tifffile
    from PIL import Image

    window = int(window_raw.shape[-1])
    folder.mkdir(parents=True, exist_ok=True)
    model = with_centre_crop(onnx_model, window, side) if window != side else onnx_model
    onnx.save(model, folder / ONNX_NAME)
    np.save(folder / "test_input.npy", window_raw.astype(np.float32)[None, None])
    np.save(folder / "test_output.npy", expected.astype(np.float32)[None])
    Image.fromarray(_display(window_raw)).save(folder / "sample_input.png")
    tifffile.imwrite(folder / "sample_output.tif", expected.astype(np.float32)[None])
    _cover(window_raw, expected, folder / "cover.png")
    (folder / "README.md").write_text(_readme(name, window, side, card))
    (folder / "LICENSE").write_text(
        f"{(card or {}).get('header', {}).get('license', 'BSD-2-Clause')}: see the deadnet-caffe "
        "project's licence.\n"
    )
    labels = [paper.LABELS[k] for k in sorted(paper.LABELS)]
    if len(expected) != len(labels):
        raise UserError(f"the net has {len(expected)} outputs; a DeadNet export needs 2.")
    rdf = {
        "type": "model",
        "format_version": FORMAT_VERSION,
        "name": name,
        "description": "DeadNet phototoxicity classifier: P(healthy), P(sick) of a "
        f"{window} px phase-contrast window (converted from Caffe)",
        "authors": [{"name": "deadnet-caffe"}],
        "cite": [
            {
                "text": "Richmond D, Payne-Tobin Jost A, Lambert T, Waters J, Elliott H. DeadNet: "
                "Identifying Phototoxicity from Label-free Microscopy Images of Cells using "
                "Deep ConvNets.",
                "url": paper.PUBLISHED_REPO,
            }
        ],
        "license": (card or {}).get("header", {}).get("license", "BSD-2-Clause"),
        "documentation": "README.md",
        "covers": ["cover.png"],
        "tags": ["phase-contrast", "phototoxicity", "classification", "caffe", "onnx", "2d"],
        "version": __version__,
        "inputs": [
            {
                "id": "window",
                "description": "raw phase-contrast window, one channel",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["phase_contrast"]},
                    {"type": "space", "id": "y", "size": window},
                    {"type": "space", "id": "x", "size": window},
                ],
                "test_tensor": {"source": "test_input.npy", "sha256": None},
                "sample_tensor": {"source": "sample_input.png", "sha256": None},
                "data": {"type": "float32"},
                "preprocessing": [
                    {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y", "x"], "eps": EPS}}
                ],
            }
        ],
        "outputs": [
            {
                "id": "prob",
                "description": "softmax over (healthy, sick)",
                "axes": [{"type": "batch"}, {"type": "channel", "channel_names": labels}],
                "test_tensor": {"source": "test_output.npy", "sha256": None},
                "sample_tensor": {"source": "sample_output.tif", "sha256": None},
                "data": {"type": "float32", "range": [0.0, 1.0]},
            }
        ],
        "weights": {
            "onnx": {
                "source": ONNX_NAME,
                "sha256": None,
                "opset_version": int(model.opset_import[0].version),
            }
        },
        "config": {
            "bioimageio": {
                "reproducibility_tolerance": [
                    {
                        "absolute_tolerance": TEST_TOLERANCE,
                        "relative_tolerance": 0.0,
                        "mismatched_elements_per_million": 0,
                    }
                ]
            }
        },
    }
    _fill_sha256(rdf, folder)
    path = folder / "rdf.yaml"
    _write_yaml(rdf, path)
    return path


def _fill_sha256(node, folder: Path) -> None:
    """Replace every ``sha256: None`` beside a ``source`` by the file's SHA-256."""
    if isinstance(node, dict):
        if "sha256" in node and node["sha256"] is None:
            node["sha256"] = _sha256(folder / node["source"])
        for v in node.values():
            _fill_sha256(v, folder)
    elif isinstance(node, list):
        for v in node:
            _fill_sha256(v, folder)


def _write_yaml(doc: dict, path: Path) -> None:
    """YAML through ruyaml (a bioimageio.spec dependency, so present wherever it is)."""
    from ruyaml import YAML

    yaml = YAML()
    yaml.default_flow_style = False
    with path.open("w") as fh:
        yaml.dump(doc, fh)


def run_bioimageio_test(rdf: Path) -> dict:
    """Run bioimageio.core's own test of the package (offline: every file is local).

    Returns
    -------
    ``{"status": "passed" | "failed", "details": [(name, status, errors)]}``.
    """
    from bioimageio.core import test_description

    summary = test_description(str(rdf), runtime_env="currently-active")
    details = [(d.name, d.status, [str(e.msg) for e in d.errors]) for d in summary.details]
    return {"status": summary.status, "details": details, "summary": summary}
