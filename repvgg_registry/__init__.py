"""repvgg-registry: RepVGG networks for TensorFlow, fused and published as TF Hub models."""

import os as _os

# Keep TensorFlow's C++ start-up chatter (oneDNN, CUDA probes) off the user's terminal.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
