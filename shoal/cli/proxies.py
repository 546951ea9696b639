"""Proxy settings for new containers (S20), read from the client's config file like docker's.

The file is $SHOAL_CONFIG/config.json, else ~/.shoal/config.json, in the format of docker's
~/.docker/config.json: {"proxies": {"default": {"httpProxy": ..., "httpsProxy": ..., ...}}}.
Used by `shoal run`; `-e` given by the user wins over these.
"""
from __future__ import annotations

import json
import os

# config key -> the environment variable Docker sets (and its lower-case form too)
PROXY_KEYS = (
    ("httpProxy", "HTTP_PROXY"),
    ("httpsProxy", "HTTPS_PROXY"),
    ("ftpProxy", "FTP_PROXY"),
    ("noProxy", "NO_PROXY"),
    ("allProxy", "ALL_PROXY"),
)


def config_path(environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    base = environ.get("SHOAL_CONFIG") or os.path.join(os.path.expanduser("~"), ".shoal")
    return os.path.join(base, "config.json")


def proxy_env(path: str) -> list[str]:
    """KEY=VALUE entries for the default proxies in the config file; [] when there is none.
    A malformed file is an error naming the file, as docker's is."""
    try:
        with open(path) as handle:
            config = json.load(handle)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ValueError(f"loading config file {path}: {exc}") from None
    proxies = (config.get("proxies") or {}).get("default") or {} if isinstance(config, dict) else {}
    env = []
    for key, variable in PROXY_KEYS:
        value = proxies.get(key)
        if value:
            env += [f"{variable}={value}", f"{variable.lower()}={value}"]
    return env
