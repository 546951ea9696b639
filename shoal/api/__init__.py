"""shoal's local API: the Docker Engine API subset (v1.50) over a unix socket, with aiohttp.

server (app, listener, headers, errors) → routes_* (parse with params, call shoal.engine,
answer with convert; streams for logs/attach/exec) — no business logic lives here.
"""
