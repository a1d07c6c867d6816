"""Everything before Caffe: raw data, simulator, labels, splits, augmentation, writers.

Its bottom floor, :mod:`data_prep.core`, is what both packages share (the paper's numbers,
errors, run info, output folders, the manifest format, the one image-stack reader, the one
Datum/LMDB codec, the crop grids). Nothing in ``data_prep`` imports ``deadnet_caffe``.
"""
