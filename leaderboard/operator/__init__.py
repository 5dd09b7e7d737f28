"""Failover operator: a pure decision core (decide.py) and its shells (local, Kubernetes)."""
