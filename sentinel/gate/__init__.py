"""The deploy gate: the pure decision and the service around it (caches, single flight,
audit).
"""
