"""The managers' allocator (swarmkit's manager/allocator): subnets, VNIs, VIPs, task/node/attachment IPs, ingress ports.
core.py is the sans-IO planner over a store snapshot; runner.py runs it on the raft leader (manager/nodes_manager.py)."""
