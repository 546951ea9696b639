"""common/procsys.py: what shoal writes under /proc/sys in the namespaces it makes."""
from __future__ import annotations

from common.procsys import IPV6_OFF, fast_arp_retries


def test_ipv6_off_is_the_all_switch_which_also_sets_the_default() -> None:
    assert IPV6_OFF == (("net", "ipv6", "conf", "all", "disable_ipv6"), "1")


def test_fast_arp_retries_keep_the_kernels_give_up_time_with_ten_times_the_tries() -> None:
    assert fast_arp_retries("eth1") == [(("net", "ipv4", "neigh", "eth1", "retrans_time_ms"), "100"),
                                        (("net", "ipv4", "neigh", "eth1", "mcast_solicit"), "30"),
                                        (("net", "ipv4", "neigh", "eth1", "ucast_solicit"), "30")]
