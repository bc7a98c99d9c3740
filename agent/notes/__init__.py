"""Timeline notes that people explain: model, store, checks against custody, repair."""
