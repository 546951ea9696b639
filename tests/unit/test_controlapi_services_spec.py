"""ServiceSpec validation with swarm's messages, and the checks over the store (networks, port conflicts)."""

from __future__ import annotations

import pytest

from common.errdefs import InvalidParameter, NotFound, ShoalError
from manager.controlapi_services_spec import check_port_conflicts, check_spec, resolve_networks
from manager.store import MemoryStore
from proto import objects_pb2 as pb
from tests.unit.services_fixtures import service


def refused(spec: pb.ServiceSpec) -> str:
    with pytest.raises(InvalidParameter) as e:
        check_spec(spec)
    return e.value.message


def spec(**kw: object) -> pb.ServiceSpec:
    return service(**kw).spec  # type: ignore[arg-type]


def test_a_valid_spec_passes() -> None:
    check_spec(spec())


@pytest.mark.parametrize("name,message", [
    ("", "meta: name must be provided"),
    ("web_", "name must be valid as a DNS name component"),
    ("-web", "name must be valid as a DNS name component"),
    ("a" * 64, "name must be 63 characters or fewer"),
])
def test_bad_names(name: str, message: str) -> None:
    s = spec()
    s.annotations.name = name
    assert refused(s) == message


def test_missing_image() -> None:
    s = spec()
    s.task.container.image = ""
    assert refused(s) == "ContainerSpec: image reference must be provided"


def test_absurd_replicas_name_the_value() -> None:
    s = spec(replicas=10**12)
    assert refused(s) == "invalid replicas value 1000000000000: at most 10000 replicas per service"


def test_invalid_constraint() -> None:
    s = spec()
    s.task.placement.constraints.append("node.labels.zone")
    assert refused(s) == "constraint expected one operator from ==, !="


@pytest.mark.parametrize("descriptor", ["node.labels.zone", "ENGINE.labels.rack", "node.hostname", "node.labels.", ""])
def test_a_placement_preference_passes_whatever_its_descriptor_as_in_swarmkit(descriptor: str) -> None:
    s = spec()
    s.task.placement.preferences.add().spread.spread_descriptor = descriptor
    check_spec(s)


def test_memory_reservation_below_4mib() -> None:
    s = spec()
    s.task.resources.reservations.memory_bytes = 1024
    assert refused(s) == "invalid memory value 1024: Must be at least 4MiB"


def test_negative_restart_delay() -> None:
    s = spec()
    s.task.restart.delay.FromNanoseconds(-1_000_000_000)
    assert refused(s) == "TaskSpec: restart-delay cannot be negative"


def test_duplicate_published_ports() -> None:
    s = spec()
    s.endpoint.ports.add(target_port=80, published_port=8080)
    s.endpoint.ports.add(target_port=81, published_port=8080)
    assert refused(s) == "EndpointSpec: duplicate published ports provided"


def test_same_published_port_on_two_protocols_is_fine() -> None:
    s = spec()
    s.endpoint.ports.add(target_port=53, published_port=53)
    s.endpoint.ports.add(target_port=53, published_port=53, protocol=pb.PortConfig.UDP)
    check_spec(s)


def test_dnsrr_with_an_ingress_port() -> None:
    s = spec()
    s.endpoint.mode = pb.EndpointSpec.DNSRR
    s.endpoint.ports.add(target_port=80, published_port=8080)
    assert refused(s) == "EndpointSpec: port published with ingress mode can't be used with dnsrr mode"


def _store_with(*objects: tuple[str, object]) -> MemoryStore:
    st = MemoryStore()

    def fn(tx: object) -> None:
        for kind, obj in objects:
            tx.create(kind, obj)  # type: ignore[attr-defined]

    data, _ = st.prepare(fn, "r1")
    st.apply(1, data)
    return st


def test_network_names_resolve_to_ids_and_unknown_ones_are_refused() -> None:
    net = pb.Network(id="net1abc")
    net.spec.annotations.name = "appnet"
    view = _store_with(("network", net)).view()
    s = spec()
    s.task.networks.add(target="appnet")
    resolve_networks(s, view)
    assert [n.target for n in s.task.networks] == ["net1abc"]
    s.task.networks.add(target="nosuch")
    with pytest.raises(NotFound) as e:
        resolve_networks(s, view)
    assert e.value.message == "network nosuch not found"


def test_ingress_port_taken_by_another_service() -> None:
    web = service("web", sid="websvc")
    web.spec.endpoint.ports.add(target_port=80, published_port=8080)
    view = _store_with(("service", web)).view()
    s = spec(name="api")
    s.endpoint.ports.add(target_port=81, published_port=8080)
    with pytest.raises(ShoalError) as e:
        check_port_conflicts(s, "apisvc", view)
    assert e.value.message == "port '8080' is already in use by service 'web' (websvc) as an ingress port"
    check_port_conflicts(web.spec, "websvc", view)  # its own port is no conflict


def test_host_port_may_be_shared_by_host_mode_but_not_by_ingress() -> None:
    web = service("web", sid="websvc")
    web.spec.endpoint.ports.add(target_port=80, published_port=8080, publish_mode=pb.PortConfig.HOST)
    view = _store_with(("service", web)).view()
    host = spec(name="api")
    host.endpoint.ports.add(target_port=80, published_port=8080, publish_mode=pb.PortConfig.HOST)
    check_port_conflicts(host, "apisvc", view)
    ingress = spec(name="api")
    ingress.endpoint.ports.add(target_port=80, published_port=8080)
    with pytest.raises(ShoalError) as e:
        check_port_conflicts(ingress, "apisvc", view)
    assert e.value.message == "port '8080' is already in use by service 'web' (websvc) as a host-published port"


@pytest.mark.parametrize(("member", "nanos", "message"), [
    ("interval", 999_999, "ContainerSpec: Interval in HealthConfig cannot be less than 1ms"),
    ("timeout", 1, "ContainerSpec: Timeout in HealthConfig cannot be less than 1ms"),
    ("start_period", -1_000_000_000, "ContainerSpec: StartPeriod in HealthConfig cannot be less than 1ms"),
])
def test_a_health_check_duration_below_1ms_is_refused_with_swarms_words(member: str, nanos: int, message: str) -> None:
    s = spec()
    getattr(s.task.container.healthcheck, member).FromNanoseconds(nanos)
    assert refused(s) == message


def test_negative_health_check_retries_are_refused_with_swarms_words() -> None:
    s = spec()
    s.task.container.healthcheck.retries = -1
    assert refused(s) == "ContainerSpec: Retries in HealthConfig cannot be negative"


def test_a_health_check_of_zero_or_1ms_durations_passes() -> None:
    s = spec()
    h = s.task.container.healthcheck
    h.test.extend(["CMD", "true"])
    h.interval.FromNanoseconds(1_000_000)
    h.timeout.FromNanoseconds(0)
    h.start_period.FromNanoseconds(1_000_000)
    check_spec(s)


def job_spec(mode: str = "replicated_job", concurrent: int = 1, total: int = 1) -> pb.ServiceSpec:
    s = spec()
    if mode == "replicated_job":
        s.replicated_job.max_concurrent = concurrent
        s.replicated_job.total_completions = total
    else:
        s.global_job.SetInParent()
    return s


def test_a_valid_job_passes_with_its_rollback_config() -> None:
    s = job_spec()
    s.rollback.parallelism = 2
    check_spec(s)
    check_spec(job_spec("global_job"))


@pytest.mark.parametrize("mode", ["replicated_job", "global_job"])
def test_a_job_with_an_update_config_is_refused_with_swarmkits_message(mode: str) -> None:
    s = job_spec(mode)
    s.update.parallelism = 1
    assert refused(s) == "Jobs may not have an update config"


@pytest.mark.parametrize("concurrent,total,message", [
    (2**64 - 1, 1, "Maximum concurrent jobs must not be negative"),  # a Go client's uint64(-1)
    (1, 2**63, "Total completed jobs must not be negative"),
    (1, 10_001, "invalid total completions value 10001: at most 10000 tasks per job"),
])
def test_job_counts_that_are_negative_or_absurd_are_refused(concurrent: int, total: int, message: str) -> None:
    assert refused(job_spec(concurrent=concurrent, total=total)) == message
