"""RGB-D data on disk and made up: dataset readers, the synthetic generator, the depth-camera model."""
