"""Backbones, one file per model family. Each is registered as ``mmattn.<ClassName>``."""
__all__: list = []
