"""Development and test tooling: local NATS and AWS servers, the demo fleet and its metrics generator,
and the `make run` supervisor. Never imported by the services themselves."""
