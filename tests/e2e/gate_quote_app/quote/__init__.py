"""A small quoting service for the gate's validation: see service.py."""
