"""Chaos tests: the seed chain on moto behind a fault-injecting proxy, workers killed and
restarted while orders flow (controller.py), and split/trim chaos on the stream simulator."""
