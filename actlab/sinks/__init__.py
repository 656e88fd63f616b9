"""Where records go: one writer interface and one module per sink."""
