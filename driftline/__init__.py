"""Driftline's composition root: CLI, settings and the wiring of stream/inference/detectors/features."""

__version__ = "0.1.0"
