"""The zoo's slow checks (tests/zoo_checks.py) on ResNet-8 and the MobileNetV1-style net."""

from __future__ import annotations

from tests.zoo_checks import *  # noqa: F403 (the checks, collected here)
from tests.zoo_checks import zoo_run_for

zoo_run = zoo_run_for(["resnet8", "mobilenet"])
