"""The regression gate inside pytest: --fanout-save, --fanout-compare, --fanout-fail-on."""
