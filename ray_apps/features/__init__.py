"""Feature engineering: one spec, one set of kernels, three engines."""
