"""tinyopt: optimize trained neural networks into small, verified models for microcontrollers."""

import os

# tfmot needs the Keras 2 API (tf-keras); this must be set before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# oneDNN's CPU kernels: TensorFlow turns them on by itself only on CPUs with AVX-512 VNNI and newer,
# yet on an AVX2 machine (AMD EPYC, 2 cores) they train the paper CNN about 1.35x faster (9.4-10.6 s an
# epoch against 13.0-13.8 s: benchmarks/train_epoch.py). TF_ENABLE_ONEDNN_OPTS=0 turns them off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# TensorFlow's C++ start-up chatter buries the pipeline's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tinyopt.core.threadsafe_ast import serialize_ast_parse  # noqa: E402

serialize_ast_parse()

__version__ = "0.1.0"
