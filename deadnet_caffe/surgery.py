"""Net surgery: trained deploy weights -> the fully convolutional deploy net.

The fully connected layers of Table 1 become convolutions (Long et al.'s "convolutionalize"
trick, as in Caffe's ``examples/net_surgery.ipynb``): fc1's weight matrix (512, 128 * S * S)
is the (512, 128, S, S) kernel of a convolution over the whole last pooling map (S = 14 for
the published nets, 13 for the Table 1 FLOOR variant), and fc2 / score become 1 x 1
convolutions. Caffe's InnerProduct flattens its input in (C, H, W) order, the same order as
a convolution kernel's (C_in, kH, kW), so the conversion is a reshape. All other layers
(convolutions, BatchNorm statistics, Scale) are copied unchanged.

On an input of 220 + 16 k px the converted net gives k + 1 windows per axis at a stride of
16 px (:data:`data_prep.core.paper.FCN_STRIDE_PX`); docs/FAITHFULNESS.md ("FCN") says when
this equals the crop-wise net exactly.
"""

from __future__ import annotations

import os
from pathlib import Path

from data_prep.core.errors import UserError
from deadnet_caffe.netspec import load_net

#: fully connected layer of the deploy nets -> its convolution in the deploy_fcn nets
FC_TO_CONV = {"fc1": "fc1_conv", "fc2": "fc2_conv", "score": "score_conv"}


def transplant_fcn(src, dst) -> None:
    """Copy every parameter of the deploy net ``src`` into the fully convolutional ``dst``.

    Parameters
    ----------
    src : caffe.Net
        A net built from ``prototxt/deploy.prototxt`` (or a variant) with trained weights.
    dst : caffe.Net
        A net built from the matching ``deploy_fcn.prototxt``; modified in place.

    Raises
    ------
    UserError
        If a layer of ``src`` has no counterpart in ``dst`` or the element counts differ
        (e.g. published weights into the Table 1 FLOOR FCN).
    """
    for name, blobs in src.params.items():
        target = FC_TO_CONV.get(name, name)
        if target not in dst.params:
            raise UserError(
                f"layer '{name}' of the deploy net has no counterpart '{target}' in the "
                "fully convolutional net."
            )
        for i, blob in enumerate(blobs):
            out = dst.params[target][i].data
            if blob.data.size != out.size:
                raise UserError(
                    f"layer '{name}' blob {i} has shape {blob.data.shape} but '{target}' needs "
                    f"{out.shape}; use the FCN prototxt of the same variant."
                )
            out[...] = blob.data.reshape(out.shape)


def convert_to_fcn(
    deploy_prototxt: Path | str,
    weights: Path | str,
    fcn_prototxt: Path | str,
    out_weights: Path | str,
) -> Path:
    """Convert trained deploy weights into weights for the fully convolutional net.

    Parameters
    ----------
    deploy_prototxt, weights : path
        The deploy net (e.g. ``prototxt/deploy.prototxt``) and its trained .caffemodel.
    fcn_prototxt : path
        The matching fully convolutional net (e.g. ``prototxt/deploy_fcn.prototxt``).
    out_weights : path
        Where to write the converted .caffemodel (written to a temporary file, then renamed).

    Returns
    -------
    Path
        ``out_weights``.
    """
    src = load_net(deploy_prototxt, "TEST", weights)
    dst = load_net(fcn_prototxt, "TEST")
    transplant_fcn(src, dst)
    out = Path(out_weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        dst.save(str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
