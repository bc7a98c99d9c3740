"""What a sender is told (SendSettings from `[mqtt]`), what it reports, and how it fails."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.config import MqttSection
from agent.transfer import emqx
from agent.transfer import protocol as p


class TransferFailed(Exception):
    """The file could not be delivered within the bounded retries."""


class TransferInterrupted(TransferFailed):
    """Stopped early (cancelled, or the connection stayed down); a later send resumes."""


class QuotaExceeded(TransferFailed):
    """The receiver has no room for the file (0x97, or EMQX's `enospc`/`edquot`).

    It may have dropped segments it had acknowledged, so a later send resends all of them.
    """


class ReceiptInvalid(TransferFailed):
    """A fin was answered "success" without the receiver's valid receipt (SPEC 11)."""


@dataclass(frozen=True)
class SendSettings:
    """Tuning of one sender; prefix, segment size, window, rate, fin timeout and ack mode from `[mqtt]`."""

    prefix: str = "$file"
    segment_bytes: int = 262144
    max_inflight: int = 32
    rate_limit_bytes_per_s: int = 0
    ack_timeout_s: float = 10.0
    fin_timeout_s: float = 330.0  # EMQX answers fin after assembly and export (5 min default)
    max_tries: int = 5
    max_rounds: int = 3
    reconnect_wait_s: float = 60.0
    persist_interval_s: float = 1.0
    expire_after_s: int = 30 * 86400
    segments_ttl_s: int = emqx.MAX_SEGMENTS_TTL_S
    ack_mode: str = "response"

    def __post_init__(self) -> None:
        if not 0 < self.segments_ttl_s <= emqx.MAX_SEGMENTS_TTL_S:
            raise ValueError(f"segments_ttl_s {self.segments_ttl_s}: expected 1 .. 86400 (EMQX)")
        if self.segment_bytes > emqx.MAX_SEGMENT_BYTES:
            raise ValueError(
                f"segment_bytes {self.segment_bytes}: expected at most {emqx.MAX_SEGMENT_BYTES}"
            )

    @classmethod
    def from_mqtt(cls, cfg: MqttSection, **overrides: Any) -> SendSettings:
        """Settings from the dock's `[mqtt]` table."""
        values: dict[str, Any] = {
            "prefix": cfg.file_transfer_prefix,
            "segment_bytes": cfg.segment_bytes,
            "max_inflight": cfg.max_inflight,
            "rate_limit_bytes_per_s": cfg.rate_limit_bytes_per_s,
            "fin_timeout_s": cfg.fin_timeout_s,
            "ack_mode": cfg.ack_mode,
        }
        return cls(**(values | overrides))


@dataclass
class SendResult:
    """What one `send` took: segment publishes (resends included), rounds, resends, forgeries."""

    segments_sent: int = 0
    bytes_sent: int = 0
    resends: int = 0
    rounds: int = 0
    skipped: int = 0
    fins_sent: int = 0
    forged: int = 0  # "success" answers to fin without a valid receipt, ignored
    name: str = ""  # the name the file was sent under (made safe for EMQX)


def why(answer: p.Response | None) -> str:
    """An answer (or its absence) in words, for logs and failures."""
    if answer is None:
        return "no answer in time"
    return f"reason code {answer.reason_code}: {answer.reason_description}"
