"""Own PyTorch implementations of the reference networks, loading the original checkpoints."""
