"""The node's side of swarm mode: init/join/leave, its keys and certificates, the manager it runs and its agent session.
The daemon (shoal/daemon.py) owns one SwarmNode; the local API's swarm routes (shoal/api/routes_swarm.py) call it."""
