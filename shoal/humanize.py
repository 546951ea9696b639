"""Docker's human wording of durations (go-units HumanDuration): "Up 2 minutes", "3 days ago".

Pure and import-light: shared by the local API (container status) and the CLI (ps, images).
"""
from __future__ import annotations


def human_duration(seconds: float) -> str:
    """go-units HumanDuration: `Less than a second`, `2 minutes`, `About an hour`, `3 days`…"""
    secs = int(seconds)
    if secs < 1:
        return "Less than a second"
    if secs == 1:
        return "1 second"
    if secs < 60:
        return f"{secs} seconds"
    minutes = secs // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)  # Go rounds the duration to the nearest hour here
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds // 3600) // 24 // 365} years"
