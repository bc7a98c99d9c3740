"""Media probing and thumbnails: what a clip holds, read without ever altering it."""

from agent.media.probe import ProbeResult, probe
from agent.media.thumbnail import make_thumbnail

__all__ = ["ProbeResult", "make_thumbnail", "probe"]
