"""EMQX "File Transfer over MQTT" (SPEC 7): the dock's sender and the reference central receiver."""
