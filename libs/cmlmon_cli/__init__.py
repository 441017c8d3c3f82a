"""The `cmlmon` command line: every RPC of the registry and the notifier, tables for people, JSON for scripts."""
