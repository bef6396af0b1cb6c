"""Macro layer: the agent that turns events into incidents and verified, cited proposals."""
