"""Transfer signatures (SPEC 11) agree with OpenSSL's HMAC-SHA256 of the documented message."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from agent.transfer import trust

KEY_HEX = "00112233445566778899aabbccddeeff" * 2
SHA = "ab" * 32


def openssl_hmac(key_hex: str, message: str) -> str:
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", "-mac", "HMAC", "-macopt", f"hexkey:{key_hex}"],
        input=message.encode(),
        capture_output=True,
        check=True,
    ).stdout.decode()
    return out.strip().split()[-1]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command to compare with")
def test_signatures_match_openssl() -> None:
    key = trust.parse_key(KEY_HEX + "\n", "dock.key")
    assert trust.init_signature(key, "dock-01", SHA, 5, SHA) == openssl_hmac(
        KEY_HEX, f"init\ndock-01\n{SHA}\n5\n{SHA}"
    )
    assert trust.fin_receipt(key, "dock-01", SHA, 5, SHA) == openssl_hmac(
        KEY_HEX, f"fin\ndock-01\n{SHA}\n5\n{SHA}"
    )


def test_bad_key_names_the_file_not_the_key() -> None:
    with pytest.raises(trust.TransferKeyError, match="dock.key: expected 32 random bytes") as err:
        trust.parse_key("deadbeef", "dock.key")
    assert "deadbeef" not in str(err.value)


def test_valid_refuses_other_types_and_other_values() -> None:
    key = trust.parse_key(KEY_HEX, "k")
    sig = trust.init_signature(key, "d", SHA, 1, SHA)
    assert trust.valid(sig, sig.upper())
    assert not trust.valid(sig, None)
    assert not trust.valid(sig, trust.init_signature(key, "other", SHA, 1, SHA))
