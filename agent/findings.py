"""Findings, as the daemon speaks of them: the hardware layer's `Finding` and its helpers."""

from firmware_interface.findings import FAULT, INFO, WARNING, Finding, fault, info, warning

__all__ = ["FAULT", "INFO", "WARNING", "Finding", "fault", "info", "warning"]
