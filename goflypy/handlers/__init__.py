"""HTTP and WebSocket handlers, split by audience; thin by design."""
