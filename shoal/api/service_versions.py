"""A service spec as a client of an older API version meant it: moby drops the fields that version did not have before
it converts the spec (daemon/server/router/swarm/helpers.go adjustForAPIVersion), on create and on update. A client
of API 1.40 that sends `Mode.ReplicatedJob` gets a replicated service of one task, as from dockerd; one of 1.43 that
sends `Healthcheck.StartInterval` gets a check without it. The top-level `Networks` (deprecated since 1.25) is read
only below 1.44, and only when `TaskTemplate.Networks` is empty (service_json.py reads it then)."""

from __future__ import annotations

import copy
import json
from typing import Any

from common.errdefs import InvalidParameter
from shoal.api.params import version_before
from shoal.api.versioned import EACH, drop_path

# (the first API version that has the field, its path in the spec)
_ADDED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("1.40", ("TaskTemplate", "ContainerSpec", "Sysctls")),
    ("1.40", ("TaskTemplate", "ContainerSpec", "Privileges", "CredentialSpec", "Config")),
    ("1.40", ("TaskTemplate", "ContainerSpec", "Configs", EACH, "Runtime")),
    ("1.40", ("TaskTemplate", "Placement", "MaxReplicas")),
    ("1.41", ("TaskTemplate", "ContainerSpec", "CapabilityAdd")),
    ("1.41", ("TaskTemplate", "ContainerSpec", "CapabilityDrop")),
    ("1.41", ("TaskTemplate", "ContainerSpec", "Ulimits")),
    ("1.41", ("TaskTemplate", "Resources", "Limits", "Pids")),
    ("1.41", ("Mode", "ReplicatedJob")),
    ("1.41", ("Mode", "GlobalJob")),
    ("1.44", ("TaskTemplate", "ContainerSpec", "Privileges", "Seccomp")),
    ("1.44", ("TaskTemplate", "ContainerSpec", "Privileges", "AppArmor")),
    ("1.44", ("TaskTemplate", "ContainerSpec", "Privileges", "NoNewPrivileges")),
    ("1.44", ("TaskTemplate", "ContainerSpec", "Healthcheck", "StartInterval")),
    ("1.46", ("TaskTemplate", "ContainerSpec", "Mounts", EACH, "TmpfsOptions", "Options")),
    ("1.46", ("TaskTemplate", "ContainerSpec", "OomScoreAdj")),
    ("1.52", ("TaskTemplate", "Resources", "SwapBytes")),
    ("1.52", ("TaskTemplate", "Resources", "MemorySwappiness")),
)
# the deprecated top-level Networks: moby reads it below this version only
LEGACY_NETWORKS_UNTIL = "1.44"


def adjust_for_api_version(spec: Any, version: str) -> Any:
    """spec (a service spec's JSON) without what API `version` did not have; spec itself is left as it was."""
    if not isinstance(spec, dict):
        return spec  # the parser refuses it with its own message
    out = copy.deepcopy(spec)
    for added, path in _ADDED:
        if version_before(version, added):
            drop_path(out, path)
    if not version_before(version, LEGACY_NETWORKS_UNTIL):
        drop_path(out, ("Networks",))
    return out


def service_version(raw: str | None) -> int:
    """The `version` query value of a service update, as moby parses it (strconv.ParseUint), with moby's words."""
    text = raw or ""
    if not text.isascii() or not text.isdigit():
        why = "invalid syntax"
    elif len(text.lstrip("0")) > 20 or int(text) >= 1 << 64:
        why = "value out of range"
    else:
        return int(text)
    quoted = json.dumps(text, ensure_ascii=False)
    raise InvalidParameter(f"invalid service version '{text}': strconv.ParseUint: parsing {quoted}: {why}")
