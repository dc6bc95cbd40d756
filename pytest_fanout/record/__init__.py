"""Routes from recorded traffic: `fanout record`.

A recording proxy in front of each real upstream (`proxy.py`), or a HAR file
that a browser or a proxy exported (`har.py`), gives exchanges; `traffic.py`
turns them into stub routes (the answer, the measured latency as `delay_ms`
and `p99_ms`, sensitive headers dropped), and `spec_file.py` writes them into
the `[tool.fanout]` stack spec of a pyproject.toml, keeping everything else.
"""
