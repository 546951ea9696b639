"""Pure libraries that both roles use (durable files, error vocabulary, IPAM, MACs, port specs).

The lowest layer beside proto/: manager/, agent/, vxlan/ and shoal/ may import it; it imports none of them.
"""
