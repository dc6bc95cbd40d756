"""The reference fan-out service: the system under test of pytest-fanout."""
