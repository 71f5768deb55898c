"""The neural generator: a small conditional image network learnt from a character (rig2d
teacher) or from a video, exported to ONNX and run with onnxruntime (TensorRT / CUDA when a GPU
is present, CPU otherwise). Training lives in `train.py` (torch); rendering needs no torch."""
from liveavatar.generation.neural.generator import NeuralGenerator

__all__ = ["NeuralGenerator"]
