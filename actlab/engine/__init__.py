"""The training engine: experiment, state, pure step, compiled loop, cadence, optimizer, member
axes, devices."""
