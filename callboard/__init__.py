"""The callboard command line."""
