"""DeadNet-Caffe: the pycaffe side of the DeadNet reproduction (training, inference, figures)."""

from data_prep.core.runinfo import toolkit_version

__version__ = toolkit_version()
