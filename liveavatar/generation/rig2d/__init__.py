"""rig2d: the built-in layered 2D character generator (see generator.py)."""
from liveavatar.generation.rig2d.generator import Rig2DGenerator

__all__ = ["Rig2DGenerator"]
