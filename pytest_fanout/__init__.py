"""pytest-fanout: prove that FastAPI fan-out endpoints are concurrent, bounded and fast.

`pytest -p pytest_fanout` and the pytest11 entry point both load this package,
which pulls in the plugin modules below (hooks and fixtures live there).
"""

pytest_plugins = [
    "pytest_fanout.plugin",
    "pytest_fanout.gate_plugin",
    "pytest_fanout.load_plugin",
]

__version__ = "0.1.0"
