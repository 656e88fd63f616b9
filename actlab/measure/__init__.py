"""Measurements: per-layer metrics (pure jnp), output heads, the measurement step and the probes."""
