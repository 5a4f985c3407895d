"""Built-in handlers for the seed's order -> shipment chain."""
