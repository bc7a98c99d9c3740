"""ZFY_INFO for an officer binding: GBK text checked against the recorder's field sizes."""

from __future__ import annotations

from firmware_interface.base import RecorderError
from firmware_interface.zfy_sdk import ZfyInfo, decode_gbk

# ZFY_INFO field: (what the user typed it as, the field's size in bytes)
FIELDS = {
    "userNo": ("officer id (--officer)", 7),
    "userName": ("officer name (--name)", 33),
    "unitNo": ("unit number (--unit)", 13),
    "unitName": ("unit name", 33),
}


class OfficerTextError(RecorderError):
    """Officer text the recorder cannot hold; the message names the field and its limit."""

    def __init__(self, message: str) -> None:
        super().__init__("zfy_officer_text", message)


def field_bytes(c_name: str, text: str) -> bytes:
    """`text` as GBK for ZFY_INFO field `c_name`, leaving room for its terminating NUL."""
    label, size = FIELDS[c_name]
    if any(ord(c) < 32 or c == "\x7f" for c in text):
        raise OfficerTextError(f"{label} {text!r} holds control characters")
    try:
        raw = text.encode("gbk")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        raise OfficerTextError(
            f"{label} {text!r}: {bad!r} has no GBK code; the recorder stores GBK text only"
        ) from exc
    if len(raw) > size - 1:
        raise OfficerTextError(
            f"{label} {text!r} is {len(raw)} bytes in GBK; the recorder's {c_name} holds at most "
            f"{size - 1} (a Chinese character takes 2)"
        )
    return raw


def check_officer_id(officer_id: str) -> None:
    """An officer id is required and is letters and digits (it goes into clip file names)."""
    label = FIELDS["userNo"][0]
    if not officer_id:
        raise OfficerTextError(f"{label} is empty; the recorder requires one")
    if not (officer_id.isascii() and officer_id.isalnum()):
        raise OfficerTextError(
            f"{label} {officer_id!r}: expected letters and digits only "
            "(recorders put it in clip file names, between underscores)"
        )


def officer_info(current: ZfyInfo, officer_id: str, name: str, unit_no: str | None) -> ZfyInfo:
    """The ZFY_INFO to write: the recorder's own serial, the new officer, and the unit.

    The name is replaced (another officer's name must not stay); the unit number and name are
    kept unless a different unit number is given, whose name is then left empty.
    """
    check_officer_id(officer_id)
    old_unit, _ = decode_gbk(current.unitNo)
    new_unit = old_unit if unit_no is None else unit_no
    values = {
        "userNo": field_bytes("userNo", officer_id),
        "userName": field_bytes("userName", name),
        "unitNo": field_bytes("unitNo", new_unit),
        "unitName": current.unitName if new_unit == old_unit else b"",
    }
    result = ZfyInfo()  # zeroed: no byte of the old text survives past a shorter new one
    result.cSerial = bytes(current)[: ZfyInfo.cSerial.size]  # all 8 bytes, even without a NUL
    for c_name, raw in values.items():
        setattr(result, c_name, raw)
    return result
