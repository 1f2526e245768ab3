"""Lightning callbacks: thin orchestrators over :mod:`lightning_xai.functional`."""

from ._dashboard import log_text, write_layout
from .attribution import AttributionMonitor

__all__ = ["AttributionMonitor", "log_text", "write_layout"]
