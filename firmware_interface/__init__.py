"""Everything that talks to recorder hardware: drivers, discovery, volumes."""
