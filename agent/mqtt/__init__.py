"""MQTT: the connection, status/events/alerts publisher and remote commands (SPEC 6)."""
