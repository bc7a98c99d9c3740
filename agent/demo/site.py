"""A site made on the spot (SPEC 11): the shipped Mosquitto configuration, its CA and server
certificate, every user's password and every key pair (the docks' and the receiver's, each
side's .pub enrolled with the other), all in one directory.

What docs/INSTALL.md tells an installer to do by hand, done by the demo and the tests.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from agent.trust import keys

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "mosquitto"
ETC = "/etc/mosquitto/dock-agent/"
SHIPPED_LISTENER = "listener 8883\n"

_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = dock-agent site
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
subjectAltName = IP:127.0.0.1, DNS:localhost
extendedKeyUsage = serverAuth
authorityKeyIdentifier = keyid
"""
_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


@dataclass(frozen=True)
class Site:
    """One site's broker files (under `root`) and every client's secrets."""

    root: Path
    port: int
    receiver: str
    it: str
    password_files: dict[str, Path] = field(default_factory=dict)  # user -> file (0600)
    dock_key_files: dict[str, Path] = field(default_factory=dict)  # dock -> its signing key

    @property
    def conf(self) -> Path:
        """The shipped mosquitto configuration, rendered for this directory and port."""
        return self.root / "dock-agent.conf"

    @property
    def ca(self) -> Path:
        """The CA every client trusts."""
        return self.root / "ca.crt"

    @property
    def dock_keys_dir(self) -> Path:
        """The receiver's `[receiver] dock_keys_dir`: `{client_id}.pub` of every dock."""
        return self.root / "dock-keys"

    @property
    def receiver_key_file(self) -> Path:
        """The receiver's signing key (its `.pub` beside it is every dock's central_key_file)."""
        return self.root / "receiver.key"

    @property
    def central_pub(self) -> Path:
        """Central's public key as the docks are given it (`[mqtt] central_key_file`)."""
        return self.root / "receiver.pub"


def tool(name: str) -> str:
    """A program the site needs, or a clear error saying how to get it."""
    found = shutil.which(name) or shutil.which(f"/usr/sbin/{name}")
    if not found:
        raise RuntimeError(f"{name} is not installed: run ./scripts/setup.sh")
    return found


def make_site(
    root: Path, port: int, docks: list[str], receiver: str = "dock-receiver", it: str = "it"
) -> Site:
    """The shipped config, a CA and server certificate, passwords and key pairs in `root`.

    Each dock's key pair is made and its `.pub` enrolled in the receiver's dock_keys_dir;
    the receiver's pair is made and its `.pub` is what every dock gets as central's key.
    """
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    _make_pki(root)
    site = Site(root, port, receiver, it)
    passwd = root / "passwd"
    for i, user in enumerate([*docks, receiver, it]):
        password = secrets.token_urlsafe(18)
        args = [tool("mosquitto_passwd"), *(["-c"] if i == 0 else []), "-b", str(passwd)]
        subprocess.run([*args, user, password], check=True, capture_output=True)
        site.password_files[user] = _secret(root / f"{user}.password", password)
    site.dock_keys_dir.mkdir(mode=0o700, exist_ok=True)
    for dock in docks:
        path = site.dock_key_files[dock] = root / f"{dock}.key"
        key = keys.create_private(path)  # as the dock does at first start
        keys.write_public(site.dock_keys_dir / f"{dock}.pub", key.public_key(), dock)
    central = keys.create_private(site.receiver_key_file)
    keys.write_public(site.central_pub, central.public_key(), receiver)
    shutil.copyfile(SHIPPED / "acl", root / "acl")
    site.conf.write_text(render_conf(root, port))
    return site


def render_conf(root: Path, port: int) -> str:
    """The shipped configuration with its files in `root` and its listener on 127.0.0.1:`port`."""
    text = (SHIPPED / "dock-agent.conf").read_text()
    if SHIPPED_LISTENER not in text:
        raise RuntimeError(f"{SHIPPED / 'dock-agent.conf'}: no '{SHIPPED_LISTENER.strip()}'")
    text = text.replace(ETC, f"{root}/").replace(SHIPPED_LISTENER, f"listener {port} 127.0.0.1\n")
    # Started as root, mosquitto drops to its own user, which cannot read this private dir.
    return text + ("user root\n" if os.geteuid() == 0 else "")


def _secret(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return path


def _make_pki(root: Path) -> None:
    """ca.crt/ca.key and server.crt/server.key (127.0.0.1, localhost), EC P-256, 2 days."""
    (root / "openssl.cnf").write_text(_OPENSSL_CNF)
    openssl = tool("openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=root, check=True, capture_output=True)

    run("req", "-x509", *_EC_KEY, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-config", "openssl.cnf", "-extensions", "ca", "-subj", "/CN=dock-agent site CA")  # fmt: skip
    run("req", "-new", *_EC_KEY, "-keyout", "server.key", "-out", "server.csr",
        "-config", "openssl.cnf", "-subj", "/CN=localhost")  # fmt: skip
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-days", "2",
        "-set_serial", str(secrets.randbits(63)), "-extfile", "openssl.cnf",
        "-extensions", "server", "-out", "server.crt")  # fmt: skip
