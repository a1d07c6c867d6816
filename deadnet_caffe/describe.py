"""A net's layer table in the form of the paper's Table 1, computed by Caffe itself.

Caffe builds the net (Data layers are replaced by Input layers of one
``1 x crop_size x crop_size`` image, so no LMDB is needed), and every row is read from the
built net: blob shapes after Caffe's own shape inference, parameter counts from its blobs.
Forward FLOPs per image count a multiply-add as 2 FLOPs (plus 1 per output for a bias);
BatchNorm 2, Scale 1 (+1 with bias) and ReLU 1 per element; max pooling k^2 - 1 comparisons
per output. Softmax, loss, accuracy, dropout and data layers are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.core import paper
from data_prep.core.errors import UserError
from deadnet_caffe.netspec import load_net_param, net_from_param

#: layer types that the paper's Table 1 lists (the default rows of the table)
TABLE1_TYPES = ("Convolution", "Pooling", "InnerProduct")
#: layer types whose blobs are running statistics, not learned parameters
STATISTICS_TYPES = ("BatchNorm",)


@dataclass
class LayerRow:
    """One layer of a built net: Table 1's columns plus its type, parameters and FLOPs."""

    name: str
    type: str
    shape_in: tuple[int, ...]  # (N, C, H, W) or (N, C) of the first bottom; () for inputs
    shape_out: tuple[int, ...]  # of the first top
    kernel: str  # Table 1's "kernel, stride" column, e.g. "9x9x1, 1"; "" if none
    params: int  # number of values in the layer's blobs
    flops: int  # forward FLOPs per image (see the module docstring)


@dataclass
class NetDescription:
    """Every layer of one net in one phase, with totals."""

    path: Path
    phase: str
    rows: list[LayerRow] = field(default_factory=list)

    @property
    def learned_params(self) -> int:
        """Parameters that the solver updates (convolutions, inner products, Scale)."""
        return sum(r.params for r in self.rows if r.type not in STATISTICS_TYPES)

    @property
    def statistics(self) -> int:
        """BatchNorm running means, variances and moving-average factors (not learned)."""
        return sum(r.params for r in self.rows if r.type in STATISTICS_TYPES)

    @property
    def flops(self) -> int:
        """Forward FLOPs per image, summed over the layers."""
        return sum(r.flops for r in self.rows)

    def row(self, name: str) -> LayerRow:
        """The row of layer ``name`` (KeyError if the net has no such layer)."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)


def _as_input_net(net_param, size: tuple[int, int] | None):
    """Copy of ``net_param`` with Data layers -> Input layers and a batch of one image."""
    out = type(net_param)()
    out.CopyFrom(net_param)
    for layer in out.layer:
        if layer.type == "Data":
            crop = layer.transform_param.crop_size
            if not crop and size is None:
                raise UserError(
                    f"Data layer '{layer.name}' has no crop_size; give the input size with --size."
                )
            h, w = size or (crop, crop)
            layer.type = "Input"
            layer.ClearField("transform_param")
            layer.ClearField("data_param")
            shape = layer.input_param.shape.add()
            shape.dim.extend([1, paper.INPUT_CHANNELS, h, w])
            if len(layer.top) > 1:
                layer.input_param.shape.add().dim.extend([1])
        elif layer.type == "Input":
            for shape in layer.input_param.shape:
                shape.dim[0] = 1
                if size is not None and len(shape.dim) == 4:
                    shape.dim[2], shape.dim[3] = size
    return out


def _param_of(layer_params, name: str, type_: str):
    for lp in layer_params:
        if lp.name == name and lp.type == type_:
            return lp
    return None


def _kernel_hw(values, h, w, default):
    if h or w:
        return h, w
    if len(values) == 0:
        return default, default
    return values[0], values[-1]


def _layer_row(net, i: int, lp) -> LayerRow:
    name = net._layer_names[i]
    layer = net.layers[i]
    bottoms = list(net.bottom_names[name])
    tops = list(net.top_names[name])
    shape_in = tuple(net.blobs[bottoms[0]].data.shape) if bottoms else ()
    shape_out = tuple(net.blobs[tops[0]].data.shape) if tops else ()
    params = sum(b.data.size for b in net.params[name]) if name in net.params else 0
    n_out = math.prod(shape_out[1:]) if shape_out else 0
    kernel, flops = "", 0
    if layer.type == "Convolution":
        p = lp.convolution_param
        kh, kw = _kernel_hw(p.kernel_size, p.kernel_h, p.kernel_w, 1)
        sh, _ = _kernel_hw(p.stride, p.stride_h, p.stride_w, 1)
        cin = shape_in[1] // (p.group or 1)
        kernel = f"{kh}x{kw}x{cin}, {sh}"
        flops = 2 * n_out * cin * kh * kw + (n_out if p.bias_term else 0)
    elif layer.type == "InnerProduct":
        p = lp.inner_product_param
        n_in = math.prod(shape_in[1:])
        kernel = "x".join(map(str, (*shape_in[2:], shape_in[1]))) if len(shape_in) == 4 else ""
        kernel = kernel or f"1x1x{n_in}"
        flops = 2 * n_in * p.num_output + (p.num_output if p.bias_term else 0)
    elif layer.type == "Pooling":
        p = lp.pooling_param
        kh, kw = _kernel_hw([p.kernel_size] if p.kernel_size else [], p.kernel_h, p.kernel_w, 1)
        sh, _ = _kernel_hw([p.stride], p.stride_h, p.stride_w, 1)
        floor = p.round_mode == p.FLOOR
        kernel = f"{kh}x{kw}x1, {sh}" + (" floor" if floor else "")
        flops = n_out * (kh * kw - 1)
    elif layer.type == "BatchNorm":
        flops = 2 * n_out
    elif layer.type == "Scale":
        flops = n_out * (2 if lp.scale_param.bias_term else 1)
    elif layer.type == "ReLU":
        flops = n_out
    return LayerRow(name, layer.type, shape_in, shape_out, kernel, params, flops)


def describe_net(
    path: Path | str, phase: str = "TEST", size: tuple[int, int] | None = None
) -> NetDescription:
    """Build the net of ``path`` in ``phase`` with Caffe and describe every layer.

    Parameters
    ----------
    path : path
        A net prototxt (train/val with Data layers, or deploy with an Input layer).
    phase : {"TRAIN", "TEST"}
    size : (H, W), optional
        Input height and width; default: the Data layer's crop_size or the Input's shape.

    Returns
    -------
    NetDescription
        Rows in Caffe's layer order, for a batch of one image.
    """
    path = Path(path)
    net_param = _as_input_net(load_net_param(path), size)
    where = f"{path} at --size {size[0]} {size[1]}" if size else str(path)
    net = net_from_param(net_param, phase, name=where)
    desc = NetDescription(path=path, phase=phase)
    for i, name in enumerate(net._layer_names):
        lp = _param_of(net_param.layer, name, net.layers[i].type)
        desc.rows.append(_layer_row(net, i, lp))
    return desc


def _size(shape: tuple[int, ...]) -> str:
    if len(shape) == 4:
        return f"{shape[2]}x{shape[3]}x{shape[1]}"
    if len(shape) == 2:
        return f"1x1x{shape[1]}"
    return "x".join(map(str, shape[1:])) or "-"


def format_table(desc: NetDescription, all_layers: bool = False) -> str:
    """Table 1's columns (layer, size in, size out, kernel, stride) plus params and MFLOPs.

    The "Table 1" column gives the paper's name of the layer (conv_d1_1 = Conv1.1).

    By default only the layer types that Table 1 lists are shown; the totals always cover
    every layer of the net.
    """
    head = ("layer", "Table 1", "type", "size in", "size out", "kernel, stride", "params", "MFLOPs")
    rows = [head]
    for r in desc.rows:
        if all_layers or r.type in TABLE1_TYPES:
            rows.append(
                (
                    r.name,
                    paper.TABLE1_NAMES.get(r.name, ""),
                    r.type,
                    _size(r.shape_in),
                    _size(r.shape_out),
                    r.kernel,
                    f"{r.params:,}",
                    f"{r.flops / 1e6:.2f}",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            c.rjust(w) if i >= 6 else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [
        "",
        f"net: {desc.path} ({desc.phase} phase, one image)",
        f"learned parameters: {desc.learned_params:,}",
        f"BatchNorm statistics (not learned): {desc.statistics:,}",
        f"forward FLOPs per image: {desc.flops:,} ({desc.flops / 1e9:.3f} GFLOPs)",
    ]
    return "\n".join(lines)
