"""RLHF math as pure tensor functions: no models, no data loading, no I/O."""
