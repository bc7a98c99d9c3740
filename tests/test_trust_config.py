"""SPEC 11's configuration rules: who may be trusted to free a recorder, and how (pure, no broker)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from agent.config import parse_config
from agent.daemon.alerts import DELETES_HELD, evaluate
from agent.dock.clock import ClockState
from agent.schema import ConfigError
from agent.trust import keys
from agent.trust.dock import (
    deletes_held_reason,
    dock_fingerprint,
    load_dock_trust,
    signing_key_path,
)


def cfg(tmp: Path | None = None, policy: dict[str, Any] | None = None, **mqtt: Any) -> Any:
    data: dict[str, Any] = {"dock": {"id": "dock-01"}, "mqtt": mqtt, "policy": policy or {}}
    if tmp is not None:
        data["dock"]["data_dir"] = str(tmp / "data")
    return parse_config(data)


def problems(**kw: Any) -> str:
    with pytest.raises(ConfigError) as err:
        cfg(**kw)
    return "\n".join(err.value.problems)


def test_an_old_transfer_key_file_is_a_config_error_saying_what_to_do() -> None:
    text = problems(transfer_key_file="/etc/dock-agent/dock.key")
    assert text.startswith("mqtt.transfer_key_file: removed")
    assert "delete this line" in text and "dock-agent keys" in text and "central_key_file" in text


def test_the_defaults_hold_deletions_and_say_why() -> None:
    default = cfg()
    assert default.mqtt.upstream == "receiver" and default.mqtt.central_key_file == ""
    reason = deletes_held_reason(default)
    assert reason is not None and "central_key_file" in reason
    assert default.delete_policy == "never"
    assert cfg(central_key_file="/etc/dock-agent/central.pub").delete_policy == "after_upstream_ack"
    clock = ClockState(True, "test", "timesyncd")
    found = evaluate(10, 10, None, clock, default.policy, reason)
    assert [c[0] for c in found] == [DELETES_HELD]


def test_emqx_upstream_frees_recorders_only_over_tls_with_authentication() -> None:
    text = problems(upstream="emqx")
    assert "mqtt.upstream = 'emqx'" in text and "tls_ca" in text
    assert "mqtt.upstream" in problems(upstream="emqx", tls_ca="/ca.crt")  # TLS, no login
    assert "mqtt.upstream" in problems(upstream="emqx", username="d", password_file="/pw")
    cfg(upstream="emqx", tls_ca="/ca.crt", username="d", password_file="/pw")
    cfg(upstream="emqx", tls_ca="/ca.crt", tls_cert="/c.crt", tls_key="/c.key")
    cfg(upstream="emqx", policy={"delete_from_recorder": "never"})
    assert (
        deletes_held_reason(cfg(upstream="emqx", policy={"delete_from_recorder": "never"})) is None
    )


@pytest.mark.parametrize("host", ["broker.example", "10.0.0.5", "::ffff:10.0.0.5"])
def test_a_password_never_goes_in_clear_text_beyond_loopback(host: str) -> None:
    text = problems(host=host, username="d", password_file="/pw")
    assert f"mqtt.password_file: set without mqtt.tls_ca for host {host!r}" in text


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_a_password_may_go_to_loopback_without_tls(host: str) -> None:
    cfg(host=host, username="d", password_file="/pw")


def test_the_dock_key_is_made_at_first_start_0600_with_its_pub(tmp_path: Path) -> None:
    dock = cfg(tmp_path)
    assert dock_fingerprint(dock) is None
    trust = load_dock_trust(dock)
    path = signing_key_path(dock)
    assert path == tmp_path / "data" / "keys" / "dock.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pub = (tmp_path / "data" / "keys" / "dock.pub").read_text()
    assert pub.startswith("ssh-ed25519 ") and pub.strip().endswith(" dock-01")
    assert (
        dock_fingerprint(dock) == trust.fingerprint == keys.fingerprint(keys.parse_public(pub, "p"))
    )
    assert load_dock_trust(dock).fingerprint == trust.fingerprint, "the same key at the next start"


def test_key_files_others_may_read_are_refused(tmp_path: Path) -> None:
    dock = cfg(tmp_path)
    path = signing_key_path(dock)
    load_dock_trust(dock)
    os.chmod(path, 0o644)
    with pytest.raises(
        ConfigError,
        match=r"mqtt.signing_key_file = '': .*dock.key: private key "
        r"readable by group or others \(mode 0644\)",
    ):
        load_dock_trust(dock)
    pw = tmp_path / "pw"
    pw.write_text("secret")
    pw.chmod(0o640)
    with pytest.raises(ConfigError, match=r"mqtt.password_file = .*readable by group or others"):
        load_dock_trust(cfg(tmp_path, username="d", password_file=str(pw)))


def test_an_unusable_central_key_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "central.pub"
    bad.write_text("not a key\n")
    with pytest.raises(ConfigError, match=r"mqtt.central_key_file = .*central.pub.*ssh-ed25519"):
        load_dock_trust(cfg(tmp_path, central_key_file=str(bad)))


def receiver_toml(tmp: Path, **receiver: str) -> Path:
    lines = "".join(f'{k} = "{v}"\n' for k, v in receiver.items())
    path = tmp / "receiver.toml"
    path.write_text(f'[receiver]\nstore_dir = "{tmp / "store"}"\n{lines}[mqtt]\nport = 1\n')
    return path


def test_a_receiver_still_holding_hmac_keys_is_told_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    (tmp_path / "dock-keys").mkdir()
    (tmp_path / "dock-keys" / "dock-01.key").write_text("ab" * 32)
    config = receiver_toml(tmp_path, dock_keys_dir=str(tmp_path / "dock-keys"))
    assert main(["receive", "-c", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "receiver.dock_keys_dir = " in err[0]
    assert "HMAC transfer keys ({client_id}.key)" in err[0] and "{client_id}.pub" in err[0]


def test_a_receiver_key_others_may_read_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    key = tmp_path / "receiver.key"
    keys.create_private(key)
    key.chmod(0o644)
    config = receiver_toml(tmp_path, signing_key_file=str(key))
    assert main(["keys", "--receiver", "-c", str(config)]) == 2
    assert main(["receive", "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert "receiver.signing_key_file" in err and "readable by group or others" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="only root makes files for another user")
def test_keys_run_as_root_leaves_the_key_to_the_daemons_user(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 65534, 65534)  # the daemon's user owns its StateDirectory
    config = tmp_path / "dock.toml"
    config.write_text(f'[dock]\nid = "dock-01"\ndata_dir = "{data}"\n')
    assert main(["keys", "-c", str(config)]) == 0
    pub_line, fingerprint = capsys.readouterr().out.splitlines()
    for made in (data / "keys", data / "keys" / "dock.key", data / "keys" / "dock.pub"):
        assert made.stat().st_uid == 65534, made
    assert fingerprint == keys.fingerprint(keys.parse_public(pub_line, "pub"))


def test_the_receiver_sends_no_password_in_clear_text_nor_reads_an_exposed_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    pw = tmp_path / "pw"
    pw.write_text("secret")
    config = tmp_path / "receiver.toml"
    body = f'[receiver]\nstore_dir = "{tmp_path / "store"}"\n[mqtt]\nusername = "r"\n'
    config.write_text(body + f'host = "broker.example"\npassword_file = "{pw}"\n')
    assert main(["receive", "-c", str(config)]) == 2
    assert "mqtt.password_file: set without mqtt.tls_ca for host 'broker.example'" in (
        capsys.readouterr().err
    )
    pw.chmod(0o644)
    config.write_text(body + f'port = 1\npassword_file = "{pw}"\n')
    assert main(["receive", "-c", str(config)]) == 2
    assert "mqtt.password_file = " in capsys.readouterr().err
