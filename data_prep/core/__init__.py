"""The bottom floor that both packages share: the paper's numbers, errors, run info, output
folders, the manifest format, the one image-stack reader, the one Datum/LMDB codec and the
crop grids. Nothing here imports ``deadnet_caffe`` or the rest of ``data_prep``."""
