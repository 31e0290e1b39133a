"""observe/: loop state, metrics, health, systemd, alerts, logs."""
