"""Evidence at rest: the store, clip records and start times, custody, index, retention, export."""
