"""Operator tools: the `millrace` CLI, the local runner, the local Kafka broker, dead-letter chores."""
