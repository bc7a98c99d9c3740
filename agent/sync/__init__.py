"""Sending clips upstream: the sync worker and the notes outbox."""
