"""The sandbox region: an EC2-like cloud built from network namespaces."""
