"""The cluster's certificate authority (swarmkit's ca/): root CA, node certificates, join tokens, the CA gRPC service.
certs.py and tokens.py are pure; server.py serves them on the manager port (manager/swarmmanager.py wires it)."""
