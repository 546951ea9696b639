"""The network layer of a node: networks and pools (controller), drivers behind a registry,
containers' sandboxes, the pure plan they apply, and the kernel primitives (netlink, iptables, DNS)."""
