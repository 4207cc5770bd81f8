"""Kafka plumbing: event contract, topics, producer, tail, worker runtime and the Faust app."""
