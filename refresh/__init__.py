"""Refresh operations: plan and execute full refresh, fresh start, drop table, clear history."""
