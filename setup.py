"""mmattn: attention-paper models for OpenMMLab (mmdet 3.x, mmseg 1.x, mmdet3d 1.x)."""
import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = osp.dirname(osp.abspath(__file__))
# openmim's package data (``mim search`` / ``mim download mmattn --config NAME``): mmattn/.mim/
# holds the configs and model-index.yml. Made at build time, never committed: links to the
# repository's files for an editable install, copies inside the built wheel.
MIM_FILES = ('configs', 'model-index.yml')


def add_mim_symlinks() -> None:
    """mmattn/.mim/{configs,model-index.yml} -> the repository's, for an editable install."""
    mim = osp.join(ROOT, 'mmattn', '.mim')
    os.makedirs(mim, exist_ok=True)
    for name in MIM_FILES:
        link = osp.join(mim, name)
        if osp.islink(link) or osp.isfile(link):
            os.remove(link)
        elif osp.isdir(link):
            shutil.rmtree(link)
        os.symlink(osp.join('..', '..', name), link)


class BuildPyWithMim(build_py):
    """build_py that adds mmattn/.mim: copies into the build folder (a wheel), or links in the
    source tree (editable install); the source tree never gets copies."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            add_mim_symlinks()
            return
        target = osp.join(self.build_lib, 'mmattn', '.mim')
        if osp.exists(target):
            shutil.rmtree(target)
        os.makedirs(target)
        shutil.copytree(osp.join(ROOT, 'configs'), osp.join(target, 'configs'),
                        ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        shutil.copy2(osp.join(ROOT, 'model-index.yml'), osp.join(target, 'model-index.yml'))


if 'develop' in sys.argv:  # legacy ``setup.py develop`` does not run build_py
    add_mim_symlinks()


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
    cmdclass={'build_py': BuildPyWithMim},
    zip_safe=False,
)
