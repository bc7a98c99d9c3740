"""Who signed what (SPEC 11): Ed25519 key files and the messages docks and central sign."""
