"""A Caffe deploy net and its weights as an ONNX model, written by our own converter.

The converter reads the ``NetParameter`` of the deploy prototxt and the blobs of the
.caffemodel (protobuf, no pycaffe forward pass) and emits one ONNX node (or a short chain)
per Caffe layer. Supported layers and their mapping:

==============  ==========================================================================
Caffe           ONNX
==============  ==========================================================================
Input           graph input ``data``, (batch, C, H, W) float32 with a free batch size
Convolution     ``Conv`` (pads, strides, dilations, group; bias when ``bias_term``)
BatchNorm       ``BatchNormalization`` with the running averages divided by Caffe's scale
                factor (blob 2), and Caffe's ``eps`` (``use_global_stats`` must hold)
Scale           ``Mul`` and ``Add`` with (C, 1, 1) parameters (one bottom, ``axis`` 1)
ReLU            ``Relu``, or ``LeakyRelu`` when ``negative_slope`` is not 0
Pooling         ``MaxPool`` / ``AveragePool`` with ``ceil_mode`` 1: Caffe rounds the output
                size up, ``ceil((H + 2 pad - k) / stride) + 1``, and drops a last window that
                would start inside the padding (``round_mode: FLOOR``: ``ceil_mode`` 0); the
                converter computes Caffe's size and refuses a net where ONNX's rule gives
                another. Global pooling -> ``GlobalMaxPool`` / ``GlobalAveragePool``
InnerProduct    ``Flatten`` (Caffe's ``axis``) then ``Gemm`` (``transB`` unless ``transpose``)
Dropout         nothing (identity at test time)
Softmax         ``Softmax`` over axis 1 (Caffe's default)
==============  ==========================================================================

Convolution -> BatchNorm -> Scale chains are folded into one ``Conv``
(``W' = W s``, ``b' = (b - mean) s + beta``, ``s = gamma / sqrt(var + eps)``, computed in
float64) only where that gives Caffe's numbers: :func:`choose_folds` compares each folded
layer's output and P(sick) with Caffe's own blobs on probe crops, and keeps
BatchNormalization, Mul and Add where the fold is not exact to a tenth of the tolerance
(a large mean removed from a small variance: Caffe's float32 subtraction loses digits that
the folded bias keeps).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.core.errors import UserError

#: ONNX opset written: 17 (ONNX 1.12, 2022) is read by every current runtime, including
#: the ONNX Runtime versions that deepImageJ and bioimage.io's tools bundle.
OPSET = 17
#: The agreement that export promises between Caffe and ONNX Runtime (issue 19), in P(sick).
TOLERANCE = 1e-4
#: A fold must change P(sick) and its layer's output by at most this fraction of TOLERANCE,
#: so that the folds together stay well inside it.
FOLD_SHARE = 0.1


@dataclass
class Graph:
    """The converted net before it becomes an ONNX ``ModelProto``.

    ``foldable`` holds the names of the Convolution layers followed in place by BatchNorm
    and Scale (folded or not).
    """

    nodes: list = field(default_factory=list)
    inits: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)  # (name, (C, H, W))
    outputs: list = field(default_factory=list)
    foldable: list = field(default_factory=list)
    blob_tensors: dict = field(default_factory=dict)  # Caffe blob -> its last ONNX tensor
    shapes: dict = field(default_factory=dict)  # ONNX tensor -> per-item shape (C, H, W) or (C,)


def read_blobs(weights: Path | str) -> dict[str, list[np.ndarray]]:
    """The parameter blobs of a .caffemodel: ``{layer name: [float32 arrays]}``.

    Blobs keep their stored shape (``shape.dim``, or the legacy num/channels/height/width).
    """
    from google.protobuf.message import DecodeError

    from deadnet_caffe.netspec import _pb2

    param = _pb2().NetParameter()
    try:
        param.ParseFromString(Path(weights).read_bytes())
    except OSError as err:
        raise UserError(f"{weights}: cannot read the weights ({err.strerror}).") from None
    except (DecodeError, ValueError, RuntimeError) as err:
        raise UserError(f"{weights}: not a Caffe .caffemodel ({err}).") from None
    out = {}
    for layer in [*param.layers, *param.layer]:
        arrays = []
        for blob in layer.blobs:
            shape = tuple(blob.shape.dim) or (blob.num, blob.channels, blob.height, blob.width)
            values = np.asarray(blob.data or blob.double_data, dtype=np.float32)
            arrays.append(values.reshape(shape))
        if arrays:
            out[layer.name] = arrays
    return out


def _pair(value_list, single, h, w, default):
    """Caffe's repeated ``kernel_size``-style field, or its ``_h`` / ``_w`` form: (h, w)."""
    if h or w:
        return int(h), int(w)
    vals = list(value_list) if not isinstance(value_list, int) else [value_list]
    if single is not None:
        vals = [single] if single else vals
    if not vals:
        return default, default
    return (int(vals[0]), int(vals[-1])) if len(vals) <= 2 else (int(vals[0]), int(vals[1]))


def caffe_pool_size(size: int, kernel: int, stride: int, pad: int, ceil: bool = True) -> int:
    """Caffe's pooling output size along one axis (pooling_layer.cpp).

    ``ceil((size + 2 pad - kernel) / stride) + 1`` (CEIL, Caffe's default; ``floor`` for
    ``round_mode: FLOOR``), less one when there is padding and the last window would start
    inside it (``(out - 1) * stride >= size + pad``).
    """
    rnd = math.ceil if ceil else math.floor
    out = rnd((size + 2 * pad - kernel) / stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def onnx_pool_size(size: int, kernel: int, stride: int, pad: int, ceil: bool = True) -> int:
    """ONNX's output size along one axis: ``ceil_mode`` 1 with the window-start clip of opset
    19's definition (which ONNX Runtime applies at every opset), or plain floor."""
    if not ceil:
        return (size + 2 * pad - kernel) // stride + 1
    out = math.ceil((size + 2 * pad - kernel) / stride) + 1
    if (out - 1) * stride >= size + pad:
        out -= 1
    return out


def conv_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """Caffe's (and ONNX's) convolution output size along one axis."""
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


class _Builder:
    """Walks the layers in order, keeping the ONNX tensor that holds each Caffe blob now."""

    def __init__(self, param, blobs: dict, model: Path, fold: set[str] | None) -> None:
        self.param, self.blobs, self.model = param, blobs, Path(model)
        self.fold = fold
        self.g = Graph()
        self.tensor: dict[str, str] = {}  # Caffe blob -> ONNX tensor
        self.shape: dict[str, tuple] = {}  # Caffe blob -> (C, H, W) or (C,)
        self.producer: dict[str, int] = {}  # ONNX tensor -> node index (for folding)

    def fail(self, layer, problem: str) -> UserError:
        return UserError(f"{self.model}: layer '{layer.name}' ({layer.type}) {problem}.")

    def weights(self, layer, n: int) -> list[np.ndarray]:
        got = self.blobs.get(layer.name)
        if got is None or len(got) < n:
            raise self.fail(layer, f"needs {n} weight blob(s) and the .caffemodel has none")
        return got

    def init(self, name: str, array: np.ndarray) -> str:
        self.g.inits[name] = np.ascontiguousarray(array, dtype=np.float32)
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        from onnx import helper

        self.producer[output] = len(self.g.nodes)
        self.g.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def set_top(self, layer, tensor: str, shape: tuple) -> None:
        top = layer.top[0]
        self.tensor[top], self.shape[top] = tensor, shape
        self.g.shapes[tensor] = shape

    def bottom(self, layer) -> tuple[str, tuple]:
        if len(layer.bottom) != 1:
            raise self.fail(layer, f"has {len(layer.bottom)} bottoms; the converter takes one")
        b = layer.bottom[0]
        return self.tensor[b], self.shape[b]

    # --- layers ---------------------------------------------------------------------------

    def build(self) -> Graph:
        layers = [la for la in self.param.layer if _in_test(la)]
        if self.param.layers:
            raise UserError(f"{self.model}: V1 'layers' nets are not supported; upgrade it.")
        for name, dims in zip(self.param.input, self.param.input_shape, strict=False):
            self._input(name, tuple(dims.dim))
        i = 0
        while i < len(layers):
            layer = layers[i]
            if layer.type not in SUPPORTED:
                raise self.fail(
                    layer, f"has no ONNX conversion (supported: {', '.join(SUPPORTED)})"
                )
            nxt = layers[i + 1 : i + 3]
            if layer.type == "Convolution" and _bn_scale_follow(layer, nxt):
                self.g.foldable.append(layer.name)
                if self.fold is None or layer.name in self.fold:
                    self._conv(layer, fold=nxt)
                    i += 3
                    continue
            getattr(self, _METHODS[layer.type])(layer)
            i += 1
        used = {b for la in layers for b in la.bottom}
        tops = [t for la in layers for t in la.top]
        self.g.outputs = [t for t in dict.fromkeys(tops) if t not in used]
        self.g.blob_tensors = dict(self.tensor)
        return self.g

    def _input(self, name: str, dims: tuple) -> None:
        if len(dims) != 4:
            raise UserError(f"{self.model}: input '{name}' has shape {dims}; need N x C x H x W.")
        self.g.inputs.append((name, dims[1:]))
        self.tensor[name], self.shape[name] = name, dims[1:]

    def _inputlayer(self, layer) -> None:
        for top, shape in zip(layer.top, layer.input_param.shape, strict=False):
            self._input(top, tuple(shape.dim))

    def _conv(self, layer, fold=None) -> None:
        x, (c, h, w) = self.bottom(layer)
        p = layer.convolution_param
        kh, kw = _pair(p.kernel_size, None, p.kernel_h, p.kernel_w, 1)
        sh, sw = _pair(p.stride, None, p.stride_h, p.stride_w, 1)
        ph, pw = _pair(p.pad, None, p.pad_h, p.pad_w, 0)
        dh, dw = _pair(p.dilation, None, 0, 0, 1)
        if p.axis != 1:
            raise self.fail(layer, "has axis other than 1")
        blobs = self.weights(layer, 2 if p.bias_term else 1)
        wgt = blobs[0].reshape(p.num_output, c // max(p.group, 1), kh, kw)
        bias = blobs[1].reshape(-1) if p.bias_term else np.zeros(p.num_output, np.float32)
        name = layer.name
        if fold:
            scale, shift = self._bn_affine(*fold)
            wgt = (wgt.astype(np.float64) * scale[:, None, None, None]).astype(np.float32)
            bias = (bias.astype(np.float64) * scale + shift).astype(np.float32)
            name = fold[1].name
        ins = [x, self.init(f"{layer.name}/W", wgt), self.init(f"{layer.name}/b", bias)]
        out = self.node(
            "Conv",
            ins,
            name,
            kernel_shape=[kh, kw],
            strides=[sh, sw],
            pads=[ph, pw, ph, pw],
            dilations=[dh, dw],
            group=max(p.group, 1),
        )
        shape = (
            p.num_output,
            conv_size(h, kh, sh, ph, dh),
            conv_size(w, kw, sw, pw, dw),
        )
        self.set_top(layer, out, shape)

    def _bn_stats(self, layer) -> tuple[np.ndarray, np.ndarray, float]:
        """(mean, var, eps) of a BatchNorm layer: the running sums over Caffe's scale factor."""
        if layer.batch_norm_param.HasField("use_global_stats") and not (
            layer.batch_norm_param.use_global_stats
        ):
            raise self.fail(layer, "uses batch statistics (use_global_stats: false)")
        mean, var, factor = self.weights(layer, 3)[:3]
        f = float(factor.ravel()[0])
        f = 0.0 if f == 0 else 1.0 / f  # Caffe: scale 0 when the factor is 0
        return (mean.ravel() * f, var.ravel() * f, float(layer.batch_norm_param.eps))

    def _scale_params(self, layer) -> tuple[np.ndarray, np.ndarray]:
        sp = layer.scale_param
        if len(layer.bottom) != 1 or sp.axis != 1 or sp.num_axes != 1:
            raise self.fail(layer, "is not a per-channel Scale with one bottom (axis 1)")
        blobs = self.weights(layer, 2 if sp.bias_term else 1)
        gamma = blobs[0].ravel()
        beta = blobs[1].ravel() if sp.bias_term else np.zeros_like(gamma)
        return gamma, beta

    def _bn_affine(self, bn, scale) -> tuple[np.ndarray, np.ndarray]:
        """(s, t) with BatchNorm then Scale = s x + t per channel, in float64."""
        mean, var, eps = self._bn_stats(bn)
        gamma, beta = self._scale_params(scale)
        s = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        return s, beta.astype(np.float64) - mean.astype(np.float64) * s

    def _batchnorm(self, layer) -> None:
        x, shape = self.bottom(layer)
        mean, var, eps = self._bn_stats(layer)
        ones = np.ones_like(mean)
        ins = [
            x,
            self.init(f"{layer.name}/one", ones),
            self.init(f"{layer.name}/zero", np.zeros_like(mean)),
            self.init(f"{layer.name}/mean", mean),
            self.init(f"{layer.name}/var", var),
        ]
        self.set_top(layer, self.node("BatchNormalization", ins, layer.name, epsilon=eps), shape)

    def _scale(self, layer) -> None:
        x, shape = self.bottom(layer)
        gamma, beta = self._scale_params(layer)
        tail = (1,) * (len(shape) - 1)
        g = self.init(f"{layer.name}/gamma", gamma.reshape(-1, *tail))
        out = self.node("Mul", [x, g], f"{layer.name}/mul")
        b = self.init(f"{layer.name}/beta", beta.reshape(-1, *tail))
        self.set_top(layer, self.node("Add", [out, b], layer.name), shape)

    def _relu(self, layer) -> None:
        x, shape = self.bottom(layer)
        slope = layer.relu_param.negative_slope
        if slope:
            out = self.node("LeakyRelu", [x], layer.name, alpha=float(slope))
        else:
            out = self.node("Relu", [x], layer.name)
        self.set_top(layer, out, shape)

    def _pooling(self, layer) -> None:
        x, (c, h, w) = self.bottom(layer)
        p = layer.pooling_param
        kinds = {0: "Max", 1: "Average"}
        if p.pool not in kinds:
            raise self.fail(layer, "uses STOCHASTIC pooling, which ONNX lacks")
        if p.global_pooling:
            out = self.node(f"Global{kinds[p.pool]}Pool", [x], layer.name)
            self.set_top(layer, out, (c, 1, 1))
            return
        ceil = p.round_mode == 0  # CEIL = 0 (Caffe's default), FLOOR = 1
        kh, kw = _pair([], p.kernel_size, p.kernel_h, p.kernel_w, 1)
        sh, sw = _pair([], p.stride, p.stride_h, p.stride_w, 1)
        ph, pw = _pair([], p.pad, p.pad_h, p.pad_w, 0)
        caffe = (caffe_pool_size(h, kh, sh, ph, ceil), caffe_pool_size(w, kw, sw, pw, ceil))
        onnx_ = (onnx_pool_size(h, kh, sh, ph, ceil), onnx_pool_size(w, kw, sw, pw, ceil))
        if caffe != onnx_:
            raise self.fail(layer, f"gives {caffe} in Caffe but {onnx_} in ONNX")
        if p.pool == 1 and (ph or pw):
            raise self.fail(layer, "averages with padding (Caffe's divisor differs from ONNX's)")
        attrs = dict(
            kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, ph, pw], ceil_mode=int(ceil)
        )
        if p.pool == 1:
            attrs["count_include_pad"] = 0
        out = self.node(f"{kinds[p.pool]}Pool", [x], layer.name, **attrs)
        self.set_top(layer, out, (c, *caffe))

    def _innerproduct(self, layer) -> None:
        x, shape = self.bottom(layer)
        p = layer.inner_product_param
        if p.axis != 1:
            raise self.fail(layer, "has axis other than 1")
        blobs = self.weights(layer, 2 if p.bias_term else 1)
        n_in = int(np.prod(shape))
        wgt = blobs[0].reshape((n_in, p.num_output) if p.transpose else (p.num_output, n_in))
        bias = blobs[1].reshape(-1) if p.bias_term else np.zeros(p.num_output, np.float32)
        if len(shape) > 1:
            x = self.node("Flatten", [x], f"{layer.name}/flatten", axis=1)
        ins = [x, self.init(f"{layer.name}/W", wgt), self.init(f"{layer.name}/b", bias)]
        out = self.node("Gemm", ins, layer.name, transB=0 if p.transpose else 1)
        self.set_top(layer, out, (p.num_output,))

    def _dropout(self, layer) -> None:
        x, shape = self.bottom(layer)
        self.set_top(layer, x, shape)

    def _softmax(self, layer) -> None:
        x, shape = self.bottom(layer)
        if layer.softmax_param.axis != 1:
            raise self.fail(layer, "has axis other than 1")
        self.set_top(layer, self.node("Softmax", [x], layer.name, axis=1), shape)


_METHODS = {
    "Input": "_inputlayer",
    "Convolution": "_conv",
    "BatchNorm": "_batchnorm",
    "Scale": "_scale",
    "ReLU": "_relu",
    "Pooling": "_pooling",
    "InnerProduct": "_innerproduct",
    "Dropout": "_dropout",
    "Softmax": "_softmax",
}
SUPPORTED = tuple(_METHODS)


def _in_test(layer) -> bool:
    """Whether a layer runs in the TEST phase (no include/exclude rule or a TEST one)."""
    if any(r.HasField("phase") and r.phase != 1 for r in layer.include):
        return False
    return not any(r.HasField("phase") and r.phase == 1 for r in layer.exclude)


def _bn_scale_follow(conv, nxt) -> bool:
    """Whether ``nxt`` is BatchNorm then Scale, both in place on the convolution's top."""
    if len(nxt) != 2 or [la.type for la in nxt] != ["BatchNorm", "Scale"]:
        return False
    top = conv.top[0]
    return all(list(la.bottom) == [top] and list(la.top) == [top] for la in nxt)


def build_graph(param, blobs: dict, model: Path | str, fold: set[str] | None = None) -> Graph:
    """Convert a deploy NetParameter with its blobs; ``fold``: the Convolution layers to fold
    BatchNorm + Scale into (None: every foldable one; an empty set: none)."""
    return _Builder(param, blobs, Path(model), fold).build()


def to_model(g: Graph, name: str, extra_outputs: tuple[str, ...] = ()):
    """An ONNX ``ModelProto`` of ``g``: a free batch size, outputs named as Caffe's blobs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = list(g.nodes)
    outputs = []
    for blob in g.outputs:
        tensor = g.blob_tensors[blob]
        if tensor != blob:
            nodes.append(helper.make_node("Identity", [tensor], [blob], name=blob))
        shape = ["batch", *g.shapes[tensor]]
        outputs.append(helper.make_tensor_value_info(blob, TensorProto.FLOAT, shape))
    outputs += [
        helper.make_tensor_value_info(t, TensorProto.FLOAT, ["batch", *g.shapes[t]])
        for t in extra_outputs
    ]
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", *map(int, chw)])
        for n, chw in g.inputs
    ]
    inits = [numpy_helper.from_array(a, n) for n, a in g.inits.items()]
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="deadnet-caffe",
        ir_version=8,  # the IR of opset 17 (ONNX 1.12): readable by older runtimes
    )
    onnx.checker.check_model(model)
    return model


def session(model, optimize: bool = True):
    """An ONNX Runtime CPU session of an in-memory model (single-threaded: deterministic).

    ``optimize=False`` runs the graph as written: ONNX Runtime's default optimisations fuse
    Conv + BatchNormalization (+ Mul, Add) themselves, which would hide what the file holds
    from a runtime that does not.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run_batches(sess, z: np.ndarray, batch: int = 20, outputs=None) -> list[np.ndarray]:
    """Run a session on (N, H, W) net inputs, ``batch`` at a time; the outputs concatenated."""
    name = sess.get_inputs()[0].name
    parts = [
        sess.run(outputs, {name: np.asarray(z[i : i + batch], np.float32)[:, None]})
        for i in range(0, len(z), batch)
    ]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def choose_folds(
    param, blobs: dict, model: Path | str, weights: Path | str, probe: np.ndarray
) -> tuple[set, dict]:
    """The Convolution layers whose BatchNorm + Scale fold gives Caffe's numbers.

    Caffe runs the ``probe`` inputs (N, H, W) once, keeping each convolution's blob (after
    its in-place BatchNorm, Scale and ReLU) and the net's output. Each foldable layer is
    then folded on top of the folds accepted before it, the graph run as written (ONNX
    Runtime without its own fusions), and the fold kept when that blob (relative to its
    largest magnitude) and the output (absolute, P) stay within ``FOLD_SHARE x TOLERANCE``
    of Caffe's.

    Returns
    -------
    (folds, report): the layers to fold, and per foldable layer what was measured.
    """
    from deadnet_caffe.infer import DeployNet

    ref = build_graph(param, blobs, model, fold=set())
    net = DeployNet(model, weights)
    caffe_out = net.forward(probe)
    tops = {n: next(la.top[0] for la in param.layer if la.name == n) for n in ref.foldable}
    caffe_blobs = {n: net.net.blobs[t].data.copy() for n, t in tops.items()}
    limit = FOLD_SHARE * TOLERANCE
    folds: set[str] = set()
    report = {}
    for name in ref.foldable:
        trial = build_graph(param, blobs, model, fold=folds | {name})
        tensor = trial.blob_tensors[tops[name]]
        sess = session(to_model(trial, "trial", (tensor,)), optimize=False)
        out, layer = run_batches(sess, probe)
        want = caffe_blobs[name]
        d_layer = float(np.max(np.abs(layer - want)) / max(float(np.max(np.abs(want))), 1.0))
        d_out = float(np.max(np.abs(out.reshape(len(probe), -1) - caffe_out)))
        ok = d_layer <= limit and d_out <= limit
        report[name] = {"layer_rel_diff": d_layer, "output_diff": d_out, "folded": ok}
        if ok:
            folds.add(name)
    return folds, report


# --- Export with proof -----------------------------------------------------------------------


def window_side(side: int) -> int:
    """The window cut from an image for a net input of ``side`` px: the 256 px crop of
    training for the published 220 px input, else the input itself."""
    from data_prep.core.paper import CROP_PX, NET_INPUT_PX

    return CROP_PX if side == NET_INPUT_PX else side


def check_windows(paths: list[Path], side: int, n: int) -> tuple[np.ndarray, list[str]]:
    """Up to ``n`` raw windows for a net input of ``side`` px, cut from images.

    Every frame of every image (files, stacks, folders of images) is covered by windows at
    half-window stride (:func:`data_prep.core.grids.window_starts`); ``n`` of all of them are
    taken evenly spaced, so that each source contributes.

    Returns
    -------
    ((n', w, w) float32 raw windows, w = :func:`window_side`; n' labels ``file[frame](y, x)``).
    """
    from data_prep.core.grids import window_starts
    from data_prep.core.stack import image_files, read_stack

    w = window_side(side)
    files = [f for p in paths for f in (image_files(p) if Path(p).is_dir() else [Path(p)])]
    where: list[tuple[int, int, int, int]] = []
    stacks = [read_stack(f, min_side=w) for f in files]
    for i, frames in enumerate(stacks):
        ys = window_starts(frames.shape[1], w, w // 2)
        xs = window_starts(frames.shape[2], w, w // 2)
        where += [(i, t, int(y), int(x)) for t in range(len(frames)) for y in ys for x in xs]
    pick = np.unique(np.linspace(0, len(where) - 1, min(n, len(where))).round().astype(int))
    wins = np.stack(
        [
            stacks[i][t, y : y + w, x : x + w].astype(np.float32)
            for i, t, y, x in (where[k] for k in pick)
        ]
    )
    labels = [f"{files[i]}[{t}]({y}, {x})" for i, t, y, x in (where[k] for k in pick)]
    return wins, labels


def net_inputs(windows: np.ndarray, side: int) -> np.ndarray:
    """Training's per-crop normalisation of raw windows, then the centre ``side`` px:
    (N, w, w) -> (N, side, side) float32 (as :func:`deadnet_caffe.infer.crop_to_input`)."""
    from data_prep.core.normalize import variance_normalize

    z = variance_normalize(windows)
    off = (z.shape[-1] - side) // 2
    return np.ascontiguousarray(z[:, off : off + side, off : off + side])


def random_windows(side: int, n: int, seed: int = 0) -> np.ndarray:
    """(n, w, w) float32 smooth random fields (w = :func:`window_side`): check inputs for a
    net when no images are given; weaker evidence than real or simulated crops."""
    from scipy.ndimage import gaussian_filter

    w = window_side(side)
    rng = np.random.default_rng(seed)
    fields_ = rng.standard_normal((n, w, w)).astype(np.float32)
    return np.stack([gaussian_filter(f, 2.0) * 800 + 3000 for f in fields_]).astype(np.float32)


def caffe_probs(model: Path, weights: Path, z: np.ndarray, batch: int = 20) -> np.ndarray:
    """Softmax of the Caffe deploy net on net inputs: (N, side, side) -> (N, C) float32."""
    from deadnet_caffe.infer import DeployNet

    return DeployNet(model, weights).probs(z, batch)


def convert(model: Path | str, weights: Path | str, probe: np.ndarray | None = None):
    """Convert a deploy net and its weights to ONNX, folding where exact (see module doc).

    Parameters
    ----------
    probe : (N, side, side) float32 net inputs on which folds are tried; without it nothing
        is folded.

    Returns
    -------
    (onnx.ModelProto, fold report ``{conv layer: {...}}``).
    """
    from deadnet_caffe.checks import check_weights
    from deadnet_caffe.netspec import load_net_param

    model, weights = Path(model), Path(weights)
    param = load_net_param(model)
    check_weights(model, weights)
    blobs = read_blobs(weights)
    folds, report = (
        (set(), {}) if probe is None else choose_folds(param, blobs, model, weights, probe)
    )
    g = build_graph(param, blobs, model, fold=folds)
    if probe is None:
        report = {n: {"folded": False, "reason": "no probe inputs"} for n in g.foldable}
    return to_model(g, param.name or model.stem), report


def compare(onnx_model, model: Path, weights: Path, z: np.ndarray, labels: list[str]) -> dict:
    """P(sick) of Caffe and of ONNX Runtime on the same net inputs, and their difference.

    ONNX Runtime runs twice: with its default optimisations (what a user gets) and with
    none (the graph as written, what any other runtime computes); the larger difference
    counts.
    """
    from deadnet_caffe.infer import SICK

    p_caffe = caffe_probs(model, weights, z)[:, SICK].astype(np.float64)
    p_onnx = run_batches(session(onnx_model), z)[0][:, SICK]
    p_plain = run_batches(session(onnx_model, optimize=False), z)[0][:, SICK]
    d = np.maximum(np.abs(p_caffe - p_onnx), np.abs(p_caffe - p_plain))
    k = int(np.argmax(d))
    return {
        "crops": len(z),
        "max_abs_dp": float(d[k]),
        "max_abs_dp_default_session": float(np.max(np.abs(p_caffe - p_onnx))),
        "max_abs_dp_unoptimised_session": float(np.max(np.abs(p_caffe - p_plain))),
        "mean_abs_dp": float(d.mean()),
        "worst_crop": labels[k],
        "p_sick_range": [float(p_caffe.min()), float(p_caffe.max())],
        "tolerance": TOLERANCE,
        "p_caffe": p_caffe.tolist(),
        "p_onnx": p_onnx.tolist(),
    }


def export(
    weights: Path | str,
    model: Path | str,
    out: Path | str,
    checks: list[Path] | None = None,
    n_crops: int = 100,
    fold: bool = True,
    bioimageio: bool = False,
) -> dict:
    """Convert, prove and write: ``OUT/deadnet.onnx``, ``OUT/export.json`` and, with
    ``bioimageio``, the package ``OUT/bioimageio/`` (:mod:`deadnet_caffe.bioimageio_export`).

    The ONNX model is compared with the Caffe net on ``n_crops`` check crops cut from the
    ``checks`` images (smooth random fields when none are given) and written only when
    P(sick) agrees within :data:`TOLERANCE` on every crop.

    Returns
    -------
    The content of export.json.

    Raises
    ------
    UserError
        A net the converter cannot take, unreadable inputs, or a disagreement beyond the
        tolerance (nothing is written then).
    """
    try:
        import onnx
        import onnxruntime

        if bioimageio:
            import bioimageio.core as _bioimageio_core  # noqa: F401 (is it installed)
    except ImportError as err:
        raise UserError(
            f"{err.name} is not installed; install the export extra: pip install -e '.[export]'."
        ) from None

    from data_prep.core.outdir import output_dir
    from data_prep.core.runinfo import versions
    from deadnet_caffe import bioimageio_export, modelzoo

    weights, model = Path(weights), Path(model)
    checks = [Path(p) for p in checks or []]
    with output_dir(out, "export", [weights, weights.resolve(), model, *checks]) as tmp:
        side = modelzoo.input_side(model)
        if checks:
            windows, labels = check_windows(checks, side, n_crops)
        else:
            windows = random_windows(side, n_crops)
            labels = [f"random field {i}" for i in range(len(windows))]
        z = net_inputs(windows, side)
        probe = z[np.unique(np.linspace(0, len(z) - 1, min(8, len(z))).round().astype(int))]
        onnx_model, folds = convert(model, weights, probe if fold else None)
        result = compare(onnx_model, model, weights, z, labels)
        if not result["max_abs_dp"] <= TOLERANCE:
            raise UserError(
                f"{weights}: ONNX Runtime and Caffe differ by {result['max_abs_dp']:.2e} in "
                f"P(sick) on {result['worst_crop']} (more than {TOLERANCE:g}); nothing written."
            )
        onnx.save(onnx_model, tmp / "deadnet.onnx")
        doc = {
            "weights": str(weights.resolve()),
            "model": str(model.resolve()),
            "onnx": "deadnet.onnx",
            "opset": OPSET,
            "check_images": [str(p) for p in checks] or "none: smooth random fields",
            "agreement": {k: v for k, v in result.items() if k not in ("p_caffe", "p_onnx")},
            "folds": folds,
            "versions": {
                **versions(),
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
            },
        }
        if bioimageio:
            card = modelzoo.training_record(weights)
            k = int(np.argmin(np.abs(np.asarray(result["p_caffe"]) - 0.5)))  # most sensitive
            probs = caffe_probs(model, weights, z[k : k + 1])[0]
            name = f"DeadNet {Path(out).resolve().name}"
            rdf = bioimageio_export.write_package(
                tmp / "bioimageio", onnx_model, windows[k], probs, side, name, card
            )
            test = bioimageio_export.run_bioimageio_test(rdf)
            if test["status"] != "passed":
                failed = [f"{n}: {'; '.join(e)}" for n, st, e in test["details"] if st == "failed"]
                raise UserError(
                    f"bioimageio test of the package failed ({' | '.join(failed)}); "
                    "nothing written."
                )
            doc["bioimageio"] = {
                "rdf": str(rdf.relative_to(tmp)),
                "test_input": labels[k],
                "bioimageio_test": test["status"],
                "checks": [[n, st] for n, st, _ in test["details"]],
            }
        (tmp / "export.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
        (tmp / "agreement.csv").write_text(
            "crop,p_sick_caffe,p_sick_onnx\n"
            + "".join(
                f'"{lab}",{a:.9g},{b:.9g}\n'
                for lab, a, b in zip(labels, result["p_caffe"], result["p_onnx"], strict=True)
            )
        )
    return doc
