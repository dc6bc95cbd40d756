"""The `fanout_load` fixture: Locust as a bounded subprocess from a test."""
