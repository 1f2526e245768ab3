"""Exceptions raised by lightning_xai."""

__all__ = ["SanityCheckError"]


class SanityCheckError(RuntimeError):
    """Raised by ``SanityGate(action="raise")`` when explanation sanity checks fail."""
