"""Alias: ``python tools/model_converters/convert.py --model biformer SRC DST [--prefix P]``."""
import os.path as osp
import runpy
import sys

if __name__ == '__main__':
    convert = runpy.run_path(osp.join(osp.dirname(osp.abspath(__file__)), 'convert.py'))
    convert['main'](['--model', 'biformer', *sys.argv[1:]])
