"""Service names for the embedded DNS from ServiceBindings: `<service>` and its aliases -> the VIP (task
addresses in dnsrr mode), `tasks.<service>` / `tasks.<alias>` -> task addresses, task names -> their address.

Pure (service_names) plus the small step that puts them into agent.network.dns.NameTable; called
by agent.network.lb.ServiceLoadBalancer whenever a binding changes, so no record outlives a backend.
"""
from __future__ import annotations

from agent.network.dns import NameTable, normalise_name
from agent.network.service_binding import ServiceBinding


def service_names(binding: ServiceBinding) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(name -> addresses, task address -> task name) that `binding` answers on its network.

    As libnetwork: the service name and each alias resolve to the VIP (or, without a VIP,
    to every task's address); `tasks.` + each of them to every task's address."""
    tasks = [str(b.ip) for b in binding.backends]  # once each: an address's text is made in Python
    front = [str(binding.vip)] if binding.vip is not None else tasks
    names: dict[str, list[str]] = {}
    for name in (binding.service_name, *binding.aliases):
        if not name:
            continue
        names[name] = list(front)
        names[f"tasks.{name}"] = list(tasks)
    ptr: dict[str, str] = {}
    for b, text in zip(binding.backends, tasks):
        if b.task_name:
            names[b.task_name] = [text]
            ptr[text] = b.task_name
    return names, ptr


def check(binding: ServiceBinding) -> None:
    """ValueError naming the first name publish() would refuse (so a caller can refuse a binding
    before changing anything, even when the table is changed later on another thread)."""
    check_names(binding, service_names(binding)[0])


def check_names(binding: ServiceBinding, names: dict[str, list[str]]) -> None:
    """check, on the names service_names(binding) gave (a caller that publishes them too works them out once)."""
    for name in names:
        if not normalise_name(name):
            raise ValueError(f"invalid DNS name {name!r} for service {binding.service_id}")


def publish(table: NameTable, binding: ServiceBinding) -> None:
    """Make the table answer exactly what `binding` says for its service on its network."""
    names, ptr = service_names(binding)
    table.set_service_names(binding.service_id, binding.network_id, names, ptr)


def withdraw(table: NameTable, service_id: str, network_id: str) -> None:
    table.remove_service_names(service_id, network_id)
