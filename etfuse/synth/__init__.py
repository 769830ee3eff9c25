"""Synthetic provider files: writers that mirror the providers' own layouts, for tests and the demo."""
