"""The fields of a service spec that shoal applies to its tasks. Any other field set to more than its default is
refused with its path, as a container's create refuses what it does not apply (create_fields.py): a log driver
or a generic resource silently dropped would leave a service that looks right and behaves otherwise."""

from __future__ import annotations

import json
from typing import Any

from common.errdefs import InvalidParameter
from shoal.api.create_fields import is_zero

ANY = "any"  # applied, whatever its value (the parser checks it)
PRESENCE = "*presence*"  # in a rule: a member it does not name is refused even at its zero value
Rule = Any  # ANY, a tuple of the accepted values (besides zero), a dict of the members' rules, or ("list", rule)

_RESOURCES = {"nanocpus": ANY, "memorybytes": ANY}
SERVICE_SPEC: dict[str, Rule] = {
    "name": ANY,
    "labels": ANY,
    "tasktemplate": {
        "containerspec": {
            "image": ANY, "labels": ANY, "command": ANY, "args": ANY, "hostname": ANY, "env": ANY, "dir": ANY,
            "user": ANY, "stopgraceperiod": ANY, "configs": ANY, "secrets": ANY,
            "mounts": ("list", {
                "type": ANY, "source": ANY, "target": ANY, "readonly": ANY,
                "bindoptions": {"propagation": ANY},
                "volumeoptions": {"nocopy": ANY, "labels": ANY, "driverconfig": {"name": ("local",)}},
                "tmpfsoptions": {"sizebytes": ANY, "mode": ANY},
                "consistency": ("default", "consistent"),  # the only one on Linux
            }),
            "isolation": ("default",),  # the only isolation on Linux; shoal's own inspect output says so
            "healthcheck": {"test": ANY, "interval": ANY, "timeout": ANY, "retries": ANY, "startperiod": ANY,
                            "startinterval": ANY},
            # executor.create_body's create options
            "stopsignal": ANY, "tty": ANY, "openstdin": ANY, "readonly": ANY, "init": ANY, "capabilityadd": ANY,
            "capabilitydrop": ANY, "hosts": ANY, "dnsconfig": {"nameservers": ANY, "search": ANY, "options": ANY},
            "sysctls": ANY, "ulimits": ANY, "groups": ANY, "oomscoreadj": ANY,
        },
        "resources": {"limits": {**_RESOURCES, "pids": ANY}, "reservations": _RESOURCES},
        "restartpolicy": ANY,
        # every node here is the same OS and architecture (the docker CLI sends the image's platforms when it
        # could reach a registry)
        "placement": {"constraints": ANY, "preferences": ("list", {"spread": {"spreaddescriptor": ANY}}), "maxreplicas": ANY,
                      "platforms": ANY},
        "networks": ("list", {"target": ANY, "aliases": ANY}),
        "forceupdate": ANY,
        "runtime": ("container",),
        "logdriver": {"name": ("json-file",)},  # what every task's log is
    },
    # an unknown mode is refused even empty: its presence is the request
    "mode": {"replicated": {"replicas": ANY}, "global": {},
             "replicatedjob": {"maxconcurrent": ANY, "totalcompletions": ANY}, "globaljob": {}, PRESENCE: True},
    "updateconfig": ANY,
    "rollbackconfig": ANY,
    "networks": ("list", {"target": ANY, "aliases": ANY}),
    "endpointspec": {"mode": ANY, "ports": ANY},
}


def refuse_unapplied(spec: Any, rule: Rule = None, path: str = "") -> None:
    """Raises InvalidParameter naming the first field of spec (a service spec's JSON) that shoal would not apply."""
    rule = SERVICE_SPEC if rule is None else rule
    if rule == ANY or not isinstance(spec, (dict, list)):
        return  # the parser refuses a value of the wrong type with its own message
    if isinstance(rule, tuple) and rule and rule[0] == "list":
        for item in spec if isinstance(spec, list) else []:
            refuse_unapplied(item, rule[1], path)
        return
    if not isinstance(spec, dict) or not isinstance(rule, dict):
        return
    for key, value in spec.items():
        where = f"{path}.{key}" if path else str(key)
        sub = rule.get(str(key).lower())
        if sub is None:
            if rule.get(PRESENCE) or not is_zero(value, struct=True):
                _refuse(where, value)
        elif isinstance(sub, tuple) and sub and sub[0] != "list":
            if value not in sub and not is_zero(value, struct=True):
                _refuse(where, value)
        else:
            refuse_unapplied(value, sub, where)


def _refuse(field: str, value: Any) -> None:
    raise InvalidParameter(f"shoal does not support {field} yet (got {json.dumps(value)})")
