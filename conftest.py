"""Repository-root conftest: makes pytest import the source tree (see pal_atoms/__init__)."""
