"""Single-host networking building blocks: IPAM, MACs, namespaces, bridges, veths, firewall.
Used by the node's network controller (networks, endpoints, persistence) and by the overlay driver."""
