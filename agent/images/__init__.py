"""Images of one node: load `docker save` / OCI tarballs, unpack layers safely, tag, find by ref.

Used by shoal.engine (image API) and agent.executor (an image's rootfs is the overlay's lower dir).
"""
