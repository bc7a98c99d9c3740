"""`dock-agent demo`: the whole product on one machine, and its summary."""
