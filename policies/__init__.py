"""Policies: the action catalogue, risk levels, approval policy and proposal verification.

Pure: no Ray, no IO beyond reading a policy file the caller names.
"""
