"""Sandbox backends for running untrusted code."""
