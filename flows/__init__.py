"""Prefect flows that compose the steps in tasks/."""

import tinyopt  # noqa: F401  (sets TF_USE_LEGACY_KERAS before any TensorFlow import)
