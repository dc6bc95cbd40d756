"""A checkout service with four upstreams, for the timeline tests (see main.py)."""
