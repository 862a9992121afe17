"""Generators of mmattn's bundled sample datasets (``tools/data/make_sample_data.py`` is the
command line): ``coco`` writes the COCO sample, ``cityscapes`` the Cityscapes sample (scene
layout in ``cityscapes_scene``, photo in ``cityscapes_render``), ``pidray`` the PIDray sample; ``common`` holds the shared
seeded streams, noise and polygon helpers."""
from .cityscapes import make_cityscapes
from .coco import make_coco
from .common import DEFAULT_SEED
from .pidray import make_pidray

__all__ = ['DEFAULT_SEED', 'make_cityscapes', 'make_coco', 'make_pidray']
