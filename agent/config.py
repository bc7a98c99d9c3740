"""The dock's configuration (SPEC 4): typed, commented, unknown keys refused."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.evidence.retention.settings import (
    RetentionSection,
    retention_problems,
)
from agent.schema import ConfigError, in_range, parse, pattern, setting
from agent.transfer.emqx import MAX_SEGMENT_BYTES
from agent.trust.settings import deletes_held_reason, mqtt_trust_problems, without_removed_keys
from agent.ui.settings import UiSection

DEFAULT_CONFIG_PATH = "/etc/dock-agent/dock-agent.toml"
ID_RE = r"[A-Za-z0-9_-]{1,64}"
# an LED class name is one directory entry of leds_dir (e.g. "bay1:green", "ACT"): no "/", no ".."
LED_RE = r"(?![.]{1,2}$)[A-Za-z0-9_:.+@-]{0,64}"
LED_CHECK = pattern(LED_RE, "an LED class name such as 'bay1:green' (no '/'), or empty")


@dataclass(frozen=True)
class DockSection:
    """[dock]: who this dock is and where it keeps its data."""

    id: str = setting(
        doc="dock id, [A-Za-z0-9_-]{1,64}", check=pattern(ID_RE, "[A-Za-z0-9_-]{1,64}")
    )
    department: str = setting("", doc="department, a classification field of every clip")
    data_dir: str = setting("/var/lib/dock-agent", doc="evidence store, index and custody log")
    log_level: str = setting(
        "info", doc="journal detail (SIGHUP applies a change)", choices=("debug", "info", "warning")
    )


@dataclass(frozen=True)
class BaySection:
    """[[bay]]: one physical (or simulated) bay of the dock."""

    number: int = setting(doc="bay number shown to officers", check=in_range(1, 64))
    usb_path: str = setting("", doc="udev ID_PATH of the bay's USB port")
    sim_dir: str = setting("", doc="directory of a simulated recorder")
    udev_match: dict[str, str] = setting(
        default_factory=dict, doc="udev properties that identify the bay's device"
    )
    driver: str = setting(
        "", doc="recorder driver", choices=("", "simulated", "mass_storage", "zfy")
    )
    led_green: str = setting(
        "", doc="Linux LED class name of the bay's green light (SPEC 12)", check=LED_CHECK
    )
    led_red: str = setting(
        "", doc="Linux LED class name of the bay's red light (SPEC 12)", check=LED_CHECK
    )

    @property
    def kind(self) -> str:
        """The effective driver of this bay."""
        if self.driver:
            return self.driver
        return "simulated" if self.sim_dir else "mass_storage"


@dataclass(frozen=True)
class RecordersSection:
    """[recorders]: how recorder volumes and SDKs are reached."""

    mount_dir: str = setting("/run/dock-agent/media", doc="read-only mount points of volumes")
    zfy_library: str = setting("", doc="path of the GA/T 947 SDK shared library")
    zfy_password_file: str = setting("", doc="file holding the recorders' SDK password")
    zfy_id_code: str = setting("", doc="device type identification code for Init_Device")
    leds_dir: str = setting("/sys/class/leds", doc="where the bays' led_green/led_red live")


@dataclass(frozen=True)
class PolicySection:
    """[policy]: the rules of offload, validation and retention."""

    offload_window_hours: float = setting(24.0, doc="hours after recording", check=in_range(0))
    clock_tolerance_s: float = setting(2.0, doc="allowed recorder clock drift", check=in_range(0))
    require_synced_clock: bool = setting(True, doc="set recorder clocks only when ours is synced")
    clock_sync_source: str = setting(
        "auto",
        doc="how 'our clock is synced' is known: auto (timesyncd, then chrony), timesyncd, "
        "chrony, or none (never known: recorder clocks set only without require_synced_clock)",
        choices=("auto", "timesyncd", "chrony", "none"),
    )
    timezone: str = setting("", doc="recorder local time zone (IANA); default the dock's")
    ready_battery_pct: float = setting(90.0, doc="battery needed for ready", check=in_range(0, 100))
    ready_free_storage_pct: float = setting(
        90.0, doc="free recorder storage needed for ready", check=in_range(0, 100)
    )
    gap_threshold_s: float = setting(
        2.0, doc="pause between clips that is a gap", check=in_range(0)
    )
    session_break_s: float = setting(
        900.0, doc="pause that starts a new session", check=in_range(0)
    )
    delete_from_recorder: str = setting(
        "after_upstream_ack",
        doc="when a clip leaves the recorder",
        choices=("after_upstream_ack", "after_local_verify", "never"),
    )
    local_retention_days: float = setting(
        30.0, doc="days a synced local copy is kept", check=in_range(0)
    )
    disk_reserve_bytes: int = setting(
        256 * 1024 * 1024, doc="free bytes the dock keeps; offload stops below", check=in_range(0)
    )
    disk_low_pct: float = setting(
        10.0, doc="free share of the store that raises disk_low", check=in_range(0, 100)
    )
    sync_backlog_alert_s: float = setting(
        3600.0, doc="age of the oldest unsynced clip that raises sync_backlog", check=in_range(0)
    )


@dataclass(frozen=True)
class MqttSection:
    """[mqtt]: the broker the dock reports to and syncs evidence through."""

    host: str = setting("127.0.0.1", doc="broker host")
    port: int = setting(1883, doc="broker port", check=in_range(1, 65535))
    client_id: str = setting(
        "",
        doc="MQTT client id; default the dock id. It names the dock's topics in the site ACL and "
        "in Home Assistant discovery (node_id), hence [A-Za-z0-9_-]{1,64}",
        check=pattern(f"({ID_RE})?", "[A-Za-z0-9_-]{1,64}, or empty for the dock id"),
    )
    username: str = setting("", doc="MQTT user name")
    password_file: str = setting("", doc="file holding the MQTT password")
    tls_ca: str = setting("", doc="CA bundle; TLS is on when set")
    tls_cert: str = setting("", doc="client certificate for mutual TLS")
    tls_key: str = setting("", doc="client key for mutual TLS")
    topic_root: str = setting(
        "dock", doc="topic root", check=pattern(r"[^#+\s]+", "a topic without wildcards")
    )
    file_transfer_prefix: str = setting("$file", doc="EMQX file-transfer topic prefix")
    segment_bytes: int = setting(
        262144,
        doc="bytes per file-transfer segment; at most 1044480: EMQX's default max_packet_size "
        "(1048576) minus room for the topic and properties (SPEC 7.1)",
        check=in_range(1024, MAX_SEGMENT_BYTES),
    )
    max_inflight: int = setting(
        32,
        doc="unanswered segments at once (32 x 256 KiB = 8 MiB in flight: every answer takes "
        "a trip through the broker and the receiver's MQTT client, so 16 left the link idle; "
        "on the 2-core loopback bench 16 gave ~95 MiB/s, 32 ~150 MiB/s)",
        check=in_range(1, 1024),
    )
    rate_limit_bytes_per_s: int = setting(
        0, doc="upload rate limit, 0 = unlimited", check=in_range(0)
    )
    fin_timeout_s: float = setting(
        330.0,
        doc="seconds to wait for a fin's answer before sending the fin alone again (EMQX "
        "answers after assembly and export, assemble_timeout 5 min)",
        check=in_range(0.1, 86400),
    )
    ack_mode: str = setting(
        "response",
        doc="file-transfer answers: response messages, or PUBACK codes (EMQX before 5.3.2 only; "
        "never on Mosquitto, whose PUBACK means only that it took the message)",
        choices=("response", "puback"),
    )
    upstream: str = setting(
        "receiver",
        doc="who answers transfers: receiver (dock-agent receive: a clip counts as acked only "
        "with a receipt that verifies with central_key_file) or emqx (EMQX with file transfer: "
        "the broker is trusted, so deletions need TLS and authentication) (SPEC 11)",
        choices=("receiver", "emqx"),
    )
    signing_key_file: str = setting(
        "",
        doc="this dock's Ed25519 private key (PKCS#8 PEM, 0600), made at first start with its "
        ".pub beside it; a file or a systemd credential name; default {data_dir}/keys/dock.key",
    )
    central_key_file: str = setting(
        "",
        doc="central's public key (one OpenSSH line, the receiver's .pub) that signs receipts; "
        "unset with upstream receiver: no ack frees a recorder (alert deletes_held)",
    )
    custody_sync_s: float = setting(
        300.0,
        doc="custody log chunks go upstream at least this often while entries are new, and at "
        "the end of each docking (SPEC 8.1)",
        check=in_range(1, 86400),
    )
    command_rate_per_min: int = setting(
        60,
        doc="remote commands (R/cmd/#) accepted per minute; more are refused with a "
        "'rate limited' reply (SPEC 11)",
        check=in_range(1, 60000),
    )
    ha_discovery_prefix: str = setting(
        "homeassistant",
        doc="Home Assistant MQTT discovery prefix; empty disables (SPEC 12)",
        check=pattern(r"([^#+/\s]+(/[^#+/\s]+)*)?", "a topic without wildcards, or empty"),
    )


@dataclass(frozen=True)
class CentralSection:
    """[central]: services of the central side."""

    roster_url: str = setting(
        "",
        doc="HTTP(S) roster of device -> officer (JSON, see agent/roster.py); empty = no roster",
        check=pattern(r"(https?://\S+)?", "an http:// or https:// URL, or empty"),
    )
    roster_refresh_s: float = setting(
        900.0, doc="seconds between roster refreshes (conditional GET)", check=in_range(5)
    )
    roster_timeout_s: float = setting(
        10.0, doc="seconds before a roster request gives up", check=in_range(0.1, 300)
    )
    roster_token_file: str = setting(
        "", doc="file (or systemd credential) holding a bearer token for the roster"
    )


@dataclass(frozen=True)
class DockConfig:
    """The whole dock configuration."""

    dock: DockSection = setting(doc="the [dock] table is required")
    bay: list[BaySection] = setting(default_factory=list, doc="the dock's bays")
    recorders: RecordersSection = setting(default_factory=RecordersSection, doc="[recorders]")
    policy: PolicySection = setting(default_factory=PolicySection, doc="[policy]")
    mqtt: MqttSection = setting(default_factory=MqttSection, doc="[mqtt]")
    central: CentralSection = setting(default_factory=CentralSection, doc="[central]")
    ui: UiSection = setting(default_factory=UiSection, doc="[ui]: the status page")
    retention: RetentionSection = setting(
        default_factory=RetentionSection, doc="[retention]: classes, rules, purging"
    )

    @property
    def data_dir(self) -> Path:
        """The dock's data directory."""
        return Path(self.dock.data_dir)

    @property
    def client_id(self) -> str:
        """The MQTT client id the dock keeps across restarts."""
        return self.mqtt.client_id or self.dock.id

    @property
    def delete_policy(self) -> str:
        """`policy.delete_from_recorder` in effect: "never" while deletes are held (SPEC 11)."""
        held = deletes_held_reason(self.mqtt, self.policy.delete_from_recorder)
        return "never" if held else self.policy.delete_from_recorder

    @property
    def topic(self) -> str:
        """The dock's topic root R = {topic_root}/{dock.id}."""
        return f"{self.mqtt.topic_root}/{self.dock.id}"


def _bay_problems(bays: list[BaySection]) -> list[str]:
    problems: list[str] = []
    seen: set[int] = set()
    for i, bay in enumerate(bays):
        where = f"bay[{i}]"
        if bay.number in seen:
            problems.append(f"{where}.number = {bay.number}: expected a bay number used once")
        seen.add(bay.number)
        sources = [k for k in ("usb_path", "sim_dir", "udev_match") if getattr(bay, k)]
        if len(sources) != 1:
            problems.append(
                f"{where}: has {', '.join(sources) or 'none'}; expected exactly one of "
                "usb_path, sim_dir, udev_match"
            )
        if bay.driver == "simulated" and not bay.sim_dir:
            problems.append(f"{where}.driver = 'simulated': expected a sim_dir with it")
        if bay.sim_dir and bay.driver not in ("", "simulated"):
            problems.append(f"{where}.driver = {bay.driver!r}: a sim_dir bay takes 'simulated'")
    return problems


def _cross_problems(cfg: DockConfig) -> list[str]:
    problems = _bay_problems(cfg.bay)
    if any(b.kind == "zfy" for b in cfg.bay):
        problems.extend(_zfy_problems(cfg.recorders))
    if cfg.mqtt.password_file and not cfg.mqtt.username:
        problems.append("mqtt.password_file: set without mqtt.username; expected both or neither")
    if bool(cfg.mqtt.tls_cert) != bool(cfg.mqtt.tls_key):
        problems.append("mqtt.tls_cert/tls_key: expected both or neither (mutual TLS)")
    problems.extend(mqtt_trust_problems(cfg.mqtt, cfg.policy.delete_from_recorder))
    if cfg.mqtt.tls_cert and not cfg.mqtt.tls_ca:
        problems.append("mqtt.tls_ca = '': expected a CA bundle when tls_cert is set")
    if cfg.policy.timezone:
        problems.extend(_timezone_problem(cfg.policy.timezone))
    problems.extend(retention_problems(cfg.retention))
    if cfg.policy.session_break_s <= cfg.policy.gap_threshold_s:
        problems.append(
            f"policy.session_break_s = {cfg.policy.session_break_s}: expected more than "
            f"gap_threshold_s ({cfg.policy.gap_threshold_s})"
        )
    return problems


def _zfy_problems(rec: RecordersSection) -> list[str]:
    problems = []
    if not rec.zfy_library:
        problems.append(
            "recorders.zfy_library = '': expected the SDK path, a bay uses driver 'zfy'"
        )
    code = rec.zfy_id_code
    if not code:
        problems.append(
            "recorders.zfy_id_code = '': expected the recorders' device type identification "
            "code (设备识别码) that the SDK's Init_Device takes, a bay uses driver 'zfy'; the "
            "vendor gives it with the SDK (its manual or sample code's Init_Device call)"
        )
    elif not code.isprintable() or len(code.encode("gbk", "replace")) > 32:
        problems.append(
            f"recorders.zfy_id_code = {code!r}: expected printable text of at most 32 bytes"
        )
    return problems


def _timezone_problem(name: str) -> list[str]:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return [f"policy.timezone = {name!r}: expected an IANA time zone name"]
    return []


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML file, turning every failure into a ConfigError naming the file."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such configuration file"]) from None
    except PermissionError:
        raise ConfigError([f"{path}: permission denied"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None


def parse_config(data: dict[str, Any]) -> DockConfig:
    """Validate a parsed TOML document into a DockConfig, or raise ConfigError."""
    data, removed = without_removed_keys(data)
    try:
        cfg = parse(DockConfig, data, _cross_problems)
    except ConfigError as exc:
        raise ConfigError(removed + exc.problems) from None
    if removed:
        raise ConfigError(removed)
    return cfg


def resolve_path(path: str | None) -> str:
    """-c CONFIG, else $DOCK_AGENT_CONFIG, else the system default."""
    return path or os.environ.get("DOCK_AGENT_CONFIG") or DEFAULT_CONFIG_PATH


def load_config(path: str | None = None) -> DockConfig:
    """Load and validate the dock configuration from `path` (see resolve_path)."""
    resolved = resolve_path(path)
    return parse_config(read_toml(resolved))


def read_secret(path: str) -> str:
    """A secret from a file, or from systemd credentials when given as a bare name."""
    if not path:
        return ""
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    candidate = Path(cred_dir, path) if cred_dir and "/" not in path else Path(path)
    return candidate.read_text(encoding="utf-8").strip()
