"""Lightning callbacks: thin orchestrators over :mod:`lightning_xai.functional`."""

from .attribution import AttributionMonitor
from .dead_relu import DeadReLUMonitor
from .drift import FeatureDriftMonitor
from .gate import GateReason, SanityGate

__all__ = ["AttributionMonitor", "DeadReLUMonitor", "FeatureDriftMonitor", "SanityGate", "GateReason"]
