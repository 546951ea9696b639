"""The node's container runtime: OCI specs (spec) and runc-run containers that outlive the daemon (runtime).
Sits under the container manager, which owns names, networks and the Docker API; runc does the kernel work."""
