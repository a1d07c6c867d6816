"""The napari plugin of DeadNet-Caffe (npe2 manifest ``napari.yaml``; docs/napari.md).

- :mod:`.reader`: opens an experiment folder (``manifest.csv``) as calibrated movies, with the
  simulator's ground truth as labels layers;
- :mod:`.widgets`: the P(sick) heat map (exact or dense) of an image layer, and Grad-CAM of
  a selected crop, both run in napari thread workers.

Install with ``pip install 'deadnet-caffe[napari]'``; napari then finds the plugin through
the ``napari.manifest`` entry point.
"""
