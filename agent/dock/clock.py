"""The dock's trusted clock: whether the kernel clock is synchronised (adjtimex)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised
STA_UNSYNC = 0x0040


class _Timex(ctypes.Structure):
    """The head of struct timex (linux/timex.h); the tail is padding we never read."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_char * 256),  # larger than the rest of the struct on every ABI
    ]


def kernel_clock_synced() -> bool | None:
    """True when the kernel says its clock is synchronised (NTP/PTP), False if not, None if unknown."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    adjtimex.argtypes = [ctypes.POINTER(_Timex)]
    adjtimex.restype = ctypes.c_int
    tx = _Timex()  # modes = 0: read only, needs no privilege
    state = adjtimex(ctypes.byref(tx))
    if state < 0:
        logger.warning("adjtimex failed: errno %s", ctypes.get_errno())
        return None
    return state != TIME_ERROR and not tx.status & STA_UNSYNC
