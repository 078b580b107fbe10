"""pedidos: an orders service built on the productos library."""
