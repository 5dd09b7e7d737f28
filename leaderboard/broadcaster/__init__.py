"""WebSocket broadcaster: pushes top-10 changes to every connected client."""
