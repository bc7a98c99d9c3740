"""EMQX's side of file transfer, for the conformance tests of issue 12 (see README.md)."""
