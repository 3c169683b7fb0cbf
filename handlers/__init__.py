"""What events are routed to: routing rules and handler types."""
