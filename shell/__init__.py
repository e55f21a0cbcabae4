"""The client side of orq: HTTP/WebSocket client, the `orq` command and its shell."""
