"""Differential privacy of a task: its budget (:class:`PrivacyConfig`), the accountant
that turns committed versions into epsilon (:class:`Accountant`, from Google's
``dp-accounting``) and the noise multiplier calibration for a planned run.

The noise itself is the aggregation core's (:mod:`server.aggregation.privacy`) or, with
secure aggregation, the mask service's (:mod:`server.secagg.noise`).
"""

from server.privacy.accountant import Accountant, calibrate_noise_multiplier, dp_event
from server.privacy.budget import PrivacyBudget
from server.privacy.config import PrivacyConfig

__all__ = [
    "Accountant",
    "PrivacyBudget",
    "PrivacyConfig",
    "calibrate_noise_multiplier",
    "dp_event",
]
