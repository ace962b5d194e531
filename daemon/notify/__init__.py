"""Notifications: the outbox written with each event, dispatch, and one module per channel."""
