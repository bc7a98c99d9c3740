"""Ed25519 key files (SPEC 11), checked against OpenSSH's own ssh-keygen, the peer admins use."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.trust import keys, signatures

needs_ssh_keygen = pytest.mark.skipif(
    shutil.which("ssh-keygen") is None, reason="ssh-keygen (openssh-client) is not installed"
)


def test_a_key_made_at_first_start_is_0600_and_loads_again(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "dock.key"
    key, made = keys.load_or_create_private(path)
    assert made
    assert os.stat(path).st_mode & 0o777 == 0o600
    again, made_again = keys.load_or_create_private(path)
    assert not made_again
    assert keys.public_line(again.public_key(), "x") == keys.public_line(key.public_key(), "x")


def test_a_private_key_readable_by_others_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dock.key"
    keys.create_private(path)
    os.chmod(path, 0o644)
    with pytest.raises(keys.KeyFileError, match=r"dock\.key: private key readable .* 0644"):
        keys.load_private(path)


@pytest.mark.parametrize(
    "content", [b"", b"hello", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"]
)
def test_a_garbage_private_key_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "dock.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(keys.KeyFileError, match="dock.key: not an unencrypted PKCS#8"):
        keys.load_private(path)


@needs_ssh_keygen
def test_public_line_and_fingerprint_are_what_ssh_keygen_says(tmp_path: Path) -> None:
    path = tmp_path / "dock.key"
    key = keys.create_private(path)
    pub = tmp_path / "dock.pub"
    keys.write_public(pub, key.public_key(), "dock-01")
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[1] == keys.fingerprint(key.public_key())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_the_private_key_file_is_pkcs8_pem_as_openssl_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "dock.key"
    key = keys.create_private(path)
    out = subprocess.run(
        ["openssl", "pkey", "-in", str(path), "-pubout", "-outform", "DER"], capture_output=True
    )
    assert out.returncode == 0, out.stderr
    raw = key.public_key().public_bytes_raw()
    assert out.stdout.endswith(raw)  # SPKI DER of Ed25519 ends with the 32 raw key bytes


@needs_ssh_keygen
def test_a_key_made_by_ssh_keygen_is_read(tmp_path: Path) -> None:
    path = tmp_path / "id"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "central", "-f", str(path)],
        check=True,
    )
    pub = keys.load_public(Path(f"{path}.pub"))
    out = subprocess.run(["ssh-keygen", "-l", "-f", f"{path}.pub"], capture_output=True, text=True)
    assert out.stdout.split()[1] == keys.fingerprint(pub)


@pytest.mark.parametrize("line", ["", "ssh-rsa AAAAB3NzaC1yc2E x", "ssh-ed25519 !!!! x", "é"])
def test_a_bad_public_line_is_a_clear_error(line: str) -> None:
    with pytest.raises(keys.KeyFileError, match="where"):
        keys.parse_public(line, "where")


def test_signatures_verify_and_anything_else_is_false_never_an_exception(tmp_path: Path) -> None:
    key = keys.create_private(tmp_path / "k")
    pub = key.public_key()
    msg = signatures.fin_message("dock-01", "ab" * 32, 10, "CD" * 32, "n1")
    sig = signatures.sign(key, msg)
    assert signatures.verify(pub, msg, sig)
    assert signatures.verify(pub, msg, sig.upper())
    other = signatures.fin_message("dock-01", "ab" * 32, 10, "cd" * 32, "n2")
    assert not signatures.verify(pub, other, sig)  # an old receipt never answers a new fin
    for hostile in [None, 1, 1.5, [], {}, "é", "é" * 128, "zz" * 64, sig[:-1], sig + "0", "\ud800"]:
        assert not signatures.verify(pub, msg, hostile)


def test_the_init_signature_covers_the_whole_init_but_not_itself() -> None:
    init = {"name": "a.mp4", "size": 1, "checksum": "00" * 32, "user_data": {"officer_id": "1"}}
    signed = {**init, "user_data": {**init["user_data"], "dock_sig": "ff" * 64}}
    assert signatures.init_digest(init) == signatures.init_digest(signed)
    renamed = {**init, "user_data": {"officer_id": "099999"}}
    assert signatures.init_digest(init) != signatures.init_digest(renamed)
