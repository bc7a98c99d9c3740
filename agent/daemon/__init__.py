"""The running daemon: runtime, wiring, reporting, alerts, systemd."""
