"""Names of containers: validation with Docker's rule and wording, and generated names.

Pure; used by shoal.engine.engine.
"""
from __future__ import annotations

import random
import re

from shoal.engine.errors import InvalidParameter

# fullmatch, not `$`: in Python `$` also matches before a final newline ("abc\n").
VALID_NAME = re.compile(r"/?[a-zA-Z0-9][a-zA-Z0-9_.-]+")

_ADJECTIVES = (
    "brave", "calm", "eager", "fervent", "gallant", "happy", "jolly", "keen", "lucid",
    "mystic", "nifty", "quirky", "serene", "sharp", "tender", "vibrant", "wizardly", "zen",
)
_NAMES = (
    "babbage", "curie", "darwin", "euclid", "fermat", "gauss", "hopper", "hypatia", "kepler",
    "lovelace", "noether", "pascal", "ritchie", "shannon", "thompson", "turing", "wozniak",
)


def validate_container_name(name: str) -> str:
    """Returns the name without a leading "/", or raises Docker's 400."""
    if not VALID_NAME.fullmatch(name):
        raise InvalidParameter(
            f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )
    return name.lstrip("/")


def generate_name(taken: set[str], rng: random.Random | None = None) -> str:
    rng = rng or random.Random()
    for attempt in range(1000):
        name = f"{rng.choice(_ADJECTIVES)}_{rng.choice(_NAMES)}"
        if attempt > 10:
            name += str(rng.randint(0, 99))
        if name not in taken:
            return name
    raise RuntimeError("could not generate a free container name")
