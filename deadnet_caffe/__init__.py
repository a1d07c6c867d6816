"""DeadNet-Caffe: the pycaffe side of the DeadNet reproduction (training, inference, figures)."""

__version__ = "0.1.0"
