"""The shipped harness as a locustfile: every reference user, option and threshold."""

from pytest_fanout.locust import *  # noqa: F403
