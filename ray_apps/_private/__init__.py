"""Helpers nobody outside the package should import."""
