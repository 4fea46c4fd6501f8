"""dstream's domain: task files, state, plans and the backends that store state."""
