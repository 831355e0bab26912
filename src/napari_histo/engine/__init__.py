"""Computation: tiling, datasets, models, training, inference, metrics (never Qt or napari)."""
