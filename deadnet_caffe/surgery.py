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

from data_prep.core.errors import UserError

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
