"""Pipeline steps: each module holds plain step functions and the Prefect tasks that wrap them."""

import tinyopt  # noqa: F401  (sets TF_USE_LEGACY_KERAS before any TensorFlow import)
