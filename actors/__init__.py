"""Domain actors: fleet, bot, connection, session, debounce window, outbound."""
