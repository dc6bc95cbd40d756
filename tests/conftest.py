"""The test suite's set-up: the reference app's path shapes for `fanout.measure`."""

pytest_plugins = ["tests.reference_shapes"]
