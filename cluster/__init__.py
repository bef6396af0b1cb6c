"""The boundary to the data center and to Ray: telemetry, actuators, settings, deployment, CLI."""
