"""shoal: the node (CLI, daemon, local Docker API, engine, lab) of a swarm-mode cluster in Python.

Imports nothing heavy here: the CLI must start fast.
"""

__version__ = "0.1.0"
