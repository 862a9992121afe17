"""Attention operators: a PyTorch reference beside each kernel, chosen by ``backend=``."""
