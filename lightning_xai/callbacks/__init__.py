"""Lightning callbacks: thin orchestrators over :mod:`lightning_xai.functional`."""

from .attribution import AttributionMonitor
from .gate import GateReason, SanityGate

__all__ = ["AttributionMonitor", "SanityGate", "GateReason"]
