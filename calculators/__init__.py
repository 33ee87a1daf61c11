"""Committee MLP calculators with uncertainty (MACE, SchNet)."""
