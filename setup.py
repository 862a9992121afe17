"""mmattn: attention-paper models for OpenMMLab (mmdet 3.x, mmseg 1.x, mmdet3d 1.x)."""
import os.path as osp

from setuptools import find_packages, setup


def read_version() -> str:
    scope: dict = {}
    with open(osp.join(osp.dirname(__file__), 'mmattn', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='mmattn',
    version=read_version(),
    description='Attention-paper models (BiFormer, PoolFormer, Agent-Swin, SLAB, BEVANet, SDANet, '
    'BVR, ScatterFormer) for mmdet 3.x / mmseg 1.x / mmdet3d 1.x, with Triton kernels',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=find_packages(include=['mmattn', 'mmattn.*']),
    include_package_data=False,
    # what ``import mmattn.models`` (backbones, ops) imports; torch >= 2.6: safe checkpoint reading
    install_requires=['torch>=2.6', 'numpy>=2', 'mmengine>=0.10.7,<1.0', 'mmcv>=2.0.0,<2.2.0',
                      'timm>=1.0'],
    extras_require={
        # detectors (mmdet configs, COCO metrics)
        'det': ['mmdet>=3.3,<3.4', 'pycocotools'],
        # segmentors (mmseg configs, Cityscapes metric); BEVANet builds on mmseg's PIDNet parts
        'seg': ['mmsegmentation>=1.2.2,<1.3', 'ftfy', 'regex', 'cityscapesscripts'],
        # ScatterFormer on Waymo: mmdet3d (+ mmdet), the TF-free Waymo metric (scipy), BEV drawing
        '3d': ['mmdet3d>=1.4,<1.5', 'mmdet>=3.3,<3.4', 'scipy', 'matplotlib'],
        # Triton kernels of the BRA / SLA ops (CUDA)
        'kernels': ['triton>=3.0'],
        # published weights behind Google Drive links (mmattn.apis, tools/demo.py --model)
        'download': ['gdown'],
    },
    zip_safe=False,
)
