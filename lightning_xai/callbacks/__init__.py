"""Lightning callbacks: thin orchestrators over :mod:`lightning_xai.functional`."""

from .attribution import AttributionMonitor
from .dead_relu import DeadReLUMonitor

__all__ = ["AttributionMonitor", "DeadReLUMonitor"]
