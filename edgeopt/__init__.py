"""edgeopt: fit a trained PyTorch model to an edge device.

One multi-objective search over pruning, fine-tuning/distillation and quantization; every
candidate exported to ONNX and measured on this host or estimated on a hardware profile.
"""

__version__ = "0.1.0"
