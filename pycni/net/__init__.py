"""Kernel plumbing: namespaces, links, addresses, routes, sysctls, traffic control."""
