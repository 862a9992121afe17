"""Visualisation helpers (matplotlib, headless)."""
from .bev import draw_bev

__all__ = ['draw_bev']
