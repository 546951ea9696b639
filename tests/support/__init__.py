"""Test-only tools shared by tests/ and bench/: LocalCluster (managers as processes) and the linearizability checker.
Not part of the production packages (manager/, agent/, shoal/)."""
