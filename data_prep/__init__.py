"""Everything before Caffe: raw data, simulator, labels, splits, augmentation, writers."""
