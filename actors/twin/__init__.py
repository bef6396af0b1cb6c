"""Micro layer: the digital twin of GPUs, nodes, links and cooling units."""
