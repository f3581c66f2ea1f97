"""tinyopt: optimize trained neural networks into small, verified models for microcontrollers."""

import os

# tfmot needs the Keras 2 API (tf-keras); this must be set before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up chatter buries the pipeline's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
