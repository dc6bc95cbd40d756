"""The locustfile shipped in the wheel: what `fanout_load` and `run_locust` run by default.

It sits in a folder of its own because Locust puts a locustfile's folder on
`sys.path` while it loads it: nothing else here can shadow another module.
"""
