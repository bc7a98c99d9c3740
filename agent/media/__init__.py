"""Media probing and thumbnails: what a clip holds, read without ever altering it."""

import os

# OpenCV brings numpy, whose OpenBLAS starts a thread per core that spins after its first
# use; the dock does no linear algebra, so one thread (set before either is imported).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from agent.media.probe import ProbeResult, probe
from agent.media.thumbnail import make_thumbnail

__all__ = ["ProbeResult", "make_thumbnail", "probe"]
