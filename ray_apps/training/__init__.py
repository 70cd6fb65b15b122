"""Datasets, walk-forward splits, metrics, sweeps and the model registry."""
