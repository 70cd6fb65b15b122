"""The streaming path: Kafka to online features (Redis) and the offline store, on Ray actors."""
