"""The dock side of a clip's life: a bay's worker, its checks, the offload, the roster."""
