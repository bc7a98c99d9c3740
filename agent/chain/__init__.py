"""The custody chain at central (SPEC 8.1): chunks the dock sends, the receiver's check of
each, the chains central holds, and `dock-agent receive verify`."""
