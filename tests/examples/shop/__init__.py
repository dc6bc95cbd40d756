"""A user's own service, for the example tests: see test_shop_service.py."""
