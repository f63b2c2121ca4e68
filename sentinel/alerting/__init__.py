"""Alerting: a pure state machine per SLO instance, silences, and the manager that turns
transitions into outbox entries in the same transaction as the state change."""
