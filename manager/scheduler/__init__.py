"""The scheduler (swarmkit's manager/scheduler): a pure core (filters.py, spread.py, core.py) choosing a node for
each task ready to schedule, and the leader-only shell (runner.py) that batches its assignments into few proposals."""
