"""Notifiers (Slack, rollback webhooks, the log) and the outbox dispatcher that drives them."""
