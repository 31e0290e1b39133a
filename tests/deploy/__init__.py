"""Deployment artifacts: the Fly script and fly.toml, the Compose entrypoint wrapper."""
