"""Datasets. ``build_dataset({'type': 'Vimeo90KSeptuplet', **kwargs})`` builds any registered one.

Training sets return ``{'lq', 'gt', 'key'}`` tensors; test sets return whole clips (see ``transforms``).
"""
from . import frames, jilin, lmdb, sentinel2, video, vimeo  # noqa: F401  (each module registers its datasets)
from .registry import DATASETS


def build_dataset(spec):
    return DATASETS.build(spec)
