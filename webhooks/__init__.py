"""Webhooks: signed HTTP notifications of runs, refreshes and quarantined files."""
