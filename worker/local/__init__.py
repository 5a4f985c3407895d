"""Local mode: the embedded moto endpoint, table creation and the demo."""
