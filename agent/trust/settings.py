"""What `[mqtt]` must hold for a dock to trust an answer (SPEC 11), as pure checks of the config."""

from __future__ import annotations

import ipaddress
from typing import Any, Protocol


class MqttSection(Protocol):
    """The `[mqtt]` settings these rules read (agent.config.MqttSection, read-only)."""

    @property
    def host(self) -> str: ...

    @property
    def username(self) -> str: ...

    @property
    def password_file(self) -> str: ...

    @property
    def tls_ca(self) -> str: ...

    @property
    def tls_cert(self) -> str: ...

    @property
    def upstream(self) -> str: ...

    @property
    def ack_mode(self) -> str: ...

    @property
    def central_key_file(self) -> str: ...


REMOVED_MQTT_KEYS = {
    "transfer_key_file": (
        "removed: the shared HMAC transfer key is replaced by Ed25519 key pairs (SPEC 11); "
        "delete this line (and the old key file). The dock makes its key at "
        "mqtt.signing_key_file (default {data_dir}/keys/dock.key) at first start: give its "
        ".pub (`dock-agent keys`) to central as {dock_keys_dir}/{client_id}.pub, and set "
        "mqtt.central_key_file to central's .pub (`dock-agent keys --receiver` there)"
    ),
}


def without_removed_keys(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`data` without keys that no longer exist, and one line per such key saying what to do."""
    mqtt = data.get("mqtt")
    if not isinstance(mqtt, dict):
        return data, []
    found = [k for k in REMOVED_MQTT_KEYS if k in mqtt]
    if not found:
        return data, []
    kept = {k: v for k, v in mqtt.items() if k not in found}
    return data | {"mqtt": kept}, [f"mqtt.{k}: {REMOVED_MQTT_KEYS[k]}" for k in found]


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (a password may go there without TLS)."""
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def authenticates(mqtt: MqttSection) -> bool:
    """Whether the dock proves who it is to the broker: a password, or a client certificate."""
    return bool(mqtt.username and mqtt.password_file) or bool(mqtt.tls_cert)


def mqtt_trust_problems(mqtt: MqttSection, delete_policy: str) -> list[str]:
    """Settings that would let a broker client forge an ack, or would leak a password."""
    problems: list[str] = []
    if mqtt.password_file and not mqtt.tls_ca and not is_loopback(mqtt.host):
        problems.append(
            f"mqtt.password_file: set without mqtt.tls_ca for host {mqtt.host!r}; a password "
            "is never sent in clear text beyond loopback: expected tls_ca (TLS)"
        )
    if mqtt.upstream == "receiver" and mqtt.ack_mode == "puback":
        problems.append(
            "mqtt.ack_mode = 'puback': a PUBACK carries no receipt, so no clip could be acked "
            "with upstream 'receiver'; expected 'response' (puback is for EMQX before 5.3.2 "
            "only: upstream = 'emqx')"
        )
    emqx_trusted = mqtt.upstream == "emqx" and delete_policy == "after_upstream_ack"
    if emqx_trusted and not (mqtt.tls_ca and authenticates(mqtt)):
        problems.append(
            "mqtt.upstream = 'emqx': EMQX's answer frees recorders (policy.delete_from_recorder "
            "= 'after_upstream_ack'), so the broker must be authenticated: expected tls_ca and "
            "username + password_file or tls_cert/tls_key (or delete_from_recorder = 'never')"
        )
    return problems


def deletes_held_reason(mqtt: MqttSection, delete_from_recorder: str) -> str | None:
    """Why recorders are not freed although the policy says after the upstream ack (pure).

    Only acks are held: `after_local_verify` deletes on the dock's own proof, no answer needed.
    """
    if delete_from_recorder != "after_upstream_ack":
        return None
    if mqtt.upstream == "receiver" and not mqtt.central_key_file:
        return (
            "mqtt.central_key_file is not set, so no receipt from central can be verified: "
            "clips are offloaded and synced, but nothing is deleted from recorders and no local "
            "copy is purged until central's .pub is enrolled (docs/INSTALL.md)"
        )
    return None
