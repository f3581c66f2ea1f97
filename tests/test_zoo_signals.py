"""The zoo's slow checks (tests/zoo_checks.py) on the keyword-spotting DS-CNN, the temporal depthwise net and
the FC autoencoder."""

from __future__ import annotations

from tests.zoo_checks import *  # noqa: F403 (the checks, collected here)
from tests.zoo_checks import zoo_run_for

zoo_run = zoo_run_for(["ds_cnn", "temporal_dw", "autoencoder"])
