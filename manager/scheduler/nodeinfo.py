"""What the scheduler knows of a node while it places a batch (swarmkit's scheduler/nodeinfo): its live tasks per
service, reserved resources and host-mode ports in use. Pure; built by core.py from the store's nodes and tasks."""

from __future__ import annotations

from dataclasses import dataclass, field

from proto import objects_pb2 as pb

S = pb.TaskState


def occupies_node(task: pb.Task) -> bool:
    """Counts against its node: meant to run and not finished."""
    return bool(task.node_id) and task.desired_state <= S.TASK_STATE_COMPLETE and task.status.state <= S.TASK_STATE_RUNNING


def host_ports(task: pb.Task) -> set[tuple[int, int]]:
    """(protocol, published port) a task publishes in host mode."""
    return {(p.protocol, p.published_port) for p in task.endpoint.spec.ports
            if p.publish_mode == pb.PortConfig.HOST and p.published_port}


@dataclass(slots=True)
class NodeInfo:
    node: pb.Node
    tasks_by_service: dict[str, int] = field(default_factory=dict)
    total: int = 0
    reserved_cpu: int = 0
    reserved_memory: int = 0
    ports: set[tuple[int, int]] = field(default_factory=set)

    @property
    def id(self) -> str:
        return self.node.id

    def add(self, task: pb.Task) -> None:
        self.tasks_by_service[task.service_id] = self.tasks_by_service.get(task.service_id, 0) + 1
        self.total += 1
        r = task.spec.resources.reservations
        self.reserved_cpu += r.nano_cpus
        self.reserved_memory += r.memory_bytes
        self.ports |= host_ports(task)

    def free_cpu(self) -> int:
        return self.node.description.resources.nano_cpus - self.reserved_cpu

    def free_memory(self) -> int:
        return self.node.description.resources.memory_bytes - self.reserved_memory
