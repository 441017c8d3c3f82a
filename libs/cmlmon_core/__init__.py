"""What every cmlmon service shares: settings base, NATS topology and subjects, messages, logging,
telemetry and shutdown."""
