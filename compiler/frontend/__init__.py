"""Model frontends: they turn a model file into ember's graph IR."""
