"""The webhook handler: events POSTed, signed and retried; response actions run."""
