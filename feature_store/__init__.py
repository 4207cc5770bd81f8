"""Feature definitions, the Redis online store and point-in-time historical features."""
