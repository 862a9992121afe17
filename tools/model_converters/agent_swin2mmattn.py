"""Alias: ``python tools/model_converters/convert.py --model agent_swin SRC DST [--prefix P]``."""
import os.path as osp
import runpy
import sys

if __name__ == '__main__':
    convert = runpy.run_path(osp.join(osp.dirname(osp.abspath(__file__)), 'convert.py'))
    convert['main'](['--model', 'agent_swin', *sys.argv[1:]])
