"""Entry points for `ray job submit -- python -m ray_apps.jobs.<job>`."""
