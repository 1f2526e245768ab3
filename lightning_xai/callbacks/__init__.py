"""Lightning callbacks: thin orchestrators over :mod:`lightning_xai.functional`."""

from .attribution import AttributionMonitor
from .drift import FeatureDriftMonitor

__all__ = ["AttributionMonitor", "FeatureDriftMonitor"]
