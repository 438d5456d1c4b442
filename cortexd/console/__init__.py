"""The web console: pages, live updates, try-it and OpenAPI documents on the admin port (server.py)."""
