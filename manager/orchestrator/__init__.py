"""Orchestrators (swarmkit's manager/orchestrator): pure reconcile cores (replicated.py, global_.py, restart.py,
update.py) that say which tasks to create and which to stop, and the leader-only shell (runner.py) that writes them."""
