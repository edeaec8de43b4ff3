"""The scale harness (``make bench-scale``): many credentials, serve processes, one PostgreSQL."""
