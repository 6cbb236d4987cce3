"""npe2 sample-data entry point (thin)."""
