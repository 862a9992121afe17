"""CamVid as the official BEVANet (and PIDNet) code reads it.

Layout (``data/camvid/`` as the official ``data/`` root's ``camvid`` folder)::

    data/camvid/images/0001TP_006690.png          RGB 960x720
    data/camvid/labels/0001TP_006690_L.png        RGB colour-coded label
    data/list/camvid/{train,val,trainval,test}.lst
        one "images/0001TP_006690.png labels/0001TP_006690_L.png" line per sample

The list files are PIDNet's (SegNet-Tutorial split: 367 train, 101 val, 233 test); BEVANet's
``configs/camvid/BEVANet_S.yaml`` trains on ``train.lst`` and validates on ``val.lst``. Labels stay
colour images: :class:`LoadCamVidAnnotations` maps the 11 official colours to 0..10 and every other
colour (the other 21 of CamVid's 32 label colours, Void included) to 255, as the official
``CamVid.color2label``.
"""
import os.path as osp
from typing import List, Optional, Sequence

import mmcv
import mmengine
import numpy as np
from mmengine import fileio
from mmseg.datasets import BaseSegDataset
from mmseg.datasets.transforms import LoadAnnotations

from mmattn.registry import DATASETS, TRANSFORMS

__all__ = ['CamVidDataset', 'LoadCamVidAnnotations']


@DATASETS.register_module()
class CamVidDataset(BaseSegDataset):
    """CamVid, 11 classes in the official order (``color_list`` of the official ``CamVid``:
    CamVid's ``label_colors.txt`` colours of these names, alphabetical), ignore index 255.

    ``ann_file`` may be an official list file (two columns, image and label path relative to
    ``data_root``; ``data_prefix`` is not used then) or mmseg's one-name-per-line file; without it the ``img_path`` folder of
    ``data_prefix`` is scanned for ``*.png`` with labels ``<name>_L.png`` in ``seg_map_path``.
    Pipelines load the labels with ``mmattn.LoadCamVidAnnotations``.
    """
    METAINFO = dict(
        classes=('Bicyclist', 'Building', 'Car', 'Column_Pole', 'Fence', 'Pedestrian', 'Road',
                 'Sidewalk', 'SignSymbol', 'Sky', 'Tree'),
        palette=[[0, 128, 192], [128, 0, 0], [64, 0, 128], [192, 192, 128], [64, 64, 128],
                 [64, 64, 0], [128, 64, 128], [0, 0, 192], [192, 128, 128], [128, 128, 128],
                 [128, 128, 0]])

    def __init__(self, img_suffix: str = '.png', seg_map_suffix: str = '_L.png',
                 reduce_zero_label: bool = False, **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)

    def load_data_list(self) -> List[dict]:
        """Samples of an official two-column list file, else mmseg's rules."""
        if not self.ann_file or osp.isdir(self.ann_file):
            return super().load_data_list()
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(f'CamVid list file not found: {self.ann_file}')
        lines = [line.split() for line in
                 mmengine.list_from_file(self.ann_file, backend_args=self.backend_args)
                 if line.strip()]
        if not lines or len(lines[0]) == 1:
            return super().load_data_list()
        data_list = []
        for n, fields in enumerate(lines, 1):
            if len(fields) != 2:
                raise ValueError(f'{self.ann_file}:{n}: expected "IMAGE LABEL", got {fields}')
            data_list.append(dict(
                img_path=osp.join(self.data_root, fields[0]),
                seg_map_path=osp.join(self.data_root, fields[1]),
                label_map=self.label_map, reduce_zero_label=self.reduce_zero_label,
                seg_fields=[]))
        return data_list


@TRANSFORMS.register_module()
class LoadCamVidAnnotations(LoadAnnotations):
    """mmseg's ``LoadAnnotations`` for colour-coded labels: ``palette[i]`` (RGB) becomes class
    ``i``, any other colour 255; then ``reduce_zero_label`` / ``label_map`` as mmseg does.

    Args:
        palette: RGB colour of each class; default :attr:`CamVidDataset.METAINFO` ``palette``.
    """

    def __init__(self, palette: Optional[Sequence[Sequence[int]]] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        colours = np.asarray(palette if palette is not None
                             else CamVidDataset.METAINFO['palette'], dtype=np.int64)
        if colours.ndim != 2 or colours.shape[1] != 3 or len(colours) > 255:
            raise ValueError(f'palette must be at most 255 RGB triplets, got shape '
                             f'{colours.shape}')
        self.codes = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]

    def _load_seg_map(self, results: dict) -> None:
        path = results['seg_map_path']
        rgb = mmcv.imfrombytes(fileio.get(path, backend_args=self.backend_args), flag='color',
                               channel_order='rgb', backend=self.imdecode_backend)
        if rgb is None or rgb.ndim != 3:
            raise ValueError(f'{path}: not a colour label image')
        code = ((rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8)
                | rgb[..., 2])
        label = np.full(code.shape, 255, dtype=np.uint8)
        for index, c in enumerate(self.codes):
            label[code == c] = index
        if self.reduce_zero_label is None:
            self.reduce_zero_label = results['reduce_zero_label']
        if self.reduce_zero_label:
            label = np.where(label == 0, 255, label - 1).astype(np.uint8)
            label[label == 254] = 255
        if results.get('label_map') is not None:
            original = label.copy()
            for old, new in results['label_map'].items():
                label[original == old] = new
        results['gt_seg_map'] = label
        results['seg_fields'].append('gt_seg_map')

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_colours={len(self.codes)}, '
                f'imdecode_backend={self.imdecode_backend!r})')
