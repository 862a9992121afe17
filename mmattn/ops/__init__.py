"""Attention operators: a PyTorch reference beside each kernel, chosen by ``backend=``
(:mod:`mmattn.ops.dispatch`). Imports torch (and triton when installed) only: no OpenMMLab package.
"""
