"""The control plane: making Triton follow the registry, alias changes by operators, canary
gates and the drift watch."""
