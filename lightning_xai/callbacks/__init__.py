"""Lightning callbacks: thin orchestrators over :mod:`lightning_xai.functional`."""

from .attribution import AttributionMonitor

__all__ = ["AttributionMonitor"]
