"""Configuration: typed, unknown keys refused, every problem named, exit 2 and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_config, parse_config
from agent.schema import ConfigError

GOOD = """
[dock]
id = "dock-01"
department = "水政监察大队"
data_dir = "{data}"

[[bay]]
number = 1
sim_dir = "/tmp/dock-sim/bay1"

[[bay]]
number = 2
udev_match = {{ DEVNAME = "/dev/loop5" }}
driver = "mass_storage"

[policy]
clock_tolerance_s = 2.0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dock.toml"
    path.write_text(text.format(data=tmp_path / "data"), encoding="utf-8")
    return path


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    return err.value.problems


def test_good_config_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(str(write(tmp_path, GOOD)))
    assert cfg.dock.id == "dock-01"
    assert [b.kind for b in cfg.bay] == ["simulated", "mass_storage"]
    assert cfg.policy.delete_from_recorder == "after_upstream_ack"
    assert cfg.client_id == "dock-01" and cfg.topic == "dock/dock-01"


def test_unknown_key_is_named_not_ignored() -> None:
    found = problems({"dock": {"id": "d"}, "policy": {"clock_tolernce_s": 5}})
    assert any(p.startswith("policy.clock_tolernce_s: unknown key") for p in found), found


def test_wrong_types_and_values_name_key_value_and_expectation() -> None:
    found = problems(
        {
            "dock": {"id": "bad id!"},
            "policy": {"ready_battery_pct": "ninety", "delete_from_recorder": "sometimes"},
            "mqtt": {"port": 70000},
        }
    )
    text = "\n".join(found)
    assert "dock.id = 'bad id!': expected [A-Za-z0-9_-]{1,64}" in text
    assert "policy.ready_battery_pct = 'ninety': expected a number" in text
    assert "policy.delete_from_recorder = 'sometimes': expected one of" in text
    assert "mqtt.port = 70000: expected a number <= 65535" in text
    assert len(found) == 4


def test_missing_dock_id_and_cross_field_checks() -> None:
    assert any(p.startswith("dock.id: missing") for p in problems({"dock": {}}))
    found = problems(
        {
            "dock": {"id": "d"},
            "bay": [
                {"number": 1, "sim_dir": "/a", "usb_path": "x"},
                {"number": 1, "usb_path": "y"},
                {"number": 3, "usb_path": "z", "driver": "zfy"},
            ],
            "mqtt": {"tls_cert": "c"},
            "policy": {"timezone": "Mars/Olympus"},
        }
    )
    text = "\n".join(found)
    assert "bay[0]: has usb_path, sim_dir" in text
    assert "bay[1].number = 1: expected a bay number used once" in text
    assert "recorders.zfy_library" in text
    assert "recorders.zfy_id_code = '': expected" in text and "Init_Device" in text
    assert "mqtt.tls_cert/tls_key" in text
    assert "policy.timezone = 'Mars/Olympus'" in text


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[dock\nid=", "not valid TOML"),
        (
            "[dock]\nid = 'x'\n[[bay]]\nnumber = 'one'\nsim_dir = '/x'\n",
            "bay[0].number = 'one': expected an integer",
        ),
    ],
)
def test_cli_exits_2_with_one_line_per_problem(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "status", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_missing_file_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "clips", "-c", str(tmp_path / "no.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "no such configuration file" in proc.stderr


def test_config_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCK_AGENT_CONFIG", str(write(tmp_path, GOOD)))
    assert load_config(None).dock.id == "dock-01"


def test_shipped_configs_are_valid() -> None:
    root = Path(__file__).resolve().parent.parent / "config"
    cfg = load_config(str(root / "dock-agent.toml"))
    assert cfg.dock.id == "dock-01" and len(cfg.bay) == 2
    assert cfg.policy.delete_from_recorder == "after_upstream_ack"
    from agent.transfer.receiver.config import load_receiver_config

    assert load_receiver_config(str(root / "receiver.toml")).receiver.client_id == "dock-receiver"


def test_password_file_without_username_is_refused() -> None:
    found = problems({"dock": {"id": "d"}, "mqtt": {"password_file": "/etc/x"}})
    assert found == ["mqtt.password_file: set without mqtt.username; expected both or neither"]


def test_receiver_with_unreadable_tls_file_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "receiver.toml"
    cfg.write_text(
        f'[mqtt]\nport = 1\ntls_ca = "{tmp_path / "missing-ca.pem"}"\n'
        f'[receiver]\nstore_dir = "{tmp_path / "store"}"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "receive", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "mqtt.tls_ca" in proc.stderr and "Traceback" not in proc.stderr
