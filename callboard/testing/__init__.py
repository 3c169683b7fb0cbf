"""Fakes of the platforms and services callboard talks to, shared by tests and benchmarks.

Each fake speaks the real wire protocol on 127.0.0.1 so the real SDKs run unchanged
against it. A fake is never the feature: it stands in for the internet, nothing else.
"""
