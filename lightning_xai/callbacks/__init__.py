"""Lightning callbacks: thin orchestrators over :mod:`lightning_xai.functional`."""

from ..sink import log_text, write_layout
from .attribution import AttributionMonitor
from .dead_relu import DeadReLUMonitor
from .drift import FeatureDriftMonitor
from .featvis import FeatureVisualizationMonitor
from .gate import GateReason, SanityGate
from ._terminal import tensorboard_command

__all__ = [
    "AttributionMonitor", "DeadReLUMonitor", "FeatureDriftMonitor", "FeatureVisualizationMonitor", "SanityGate", "GateReason",
    "log_text", "write_layout", "tensorboard_command",
]
