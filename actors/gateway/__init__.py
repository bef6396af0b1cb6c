"""Human layer: the approval gateway, its state machine, and execution through an actuator."""
