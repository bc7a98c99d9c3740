"""The reference central receiver of EMQX file transfer (`dock-agent receive`)."""
