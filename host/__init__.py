"""dstream's side of the provider pipes: starting provider processes and the lifecycle conversation (process), the run pipeline (pipeline)."""
