"""Generators: uncertainty-aware MD, transition-state search and samplers."""
