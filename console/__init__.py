"""Autoloader Console: the Django project package and the HTMX console."""
