"""Models that score assets: torch modules, their training loop, baselines, one interface."""
