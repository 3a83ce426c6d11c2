"""Station ↔ plant: verdict messages, the durable outbox, MQTT publishing, health and telemetry."""
