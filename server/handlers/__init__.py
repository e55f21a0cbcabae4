"""HTTP and WebSocket handlers; each one asks the job service, never the database."""
