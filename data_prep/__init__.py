"""Everything before Caffe: raw-experiment format, simulator, labels, splits, augmentation, writers."""
