"""npe2 reader entry point (thin: the work is in ``slides``)."""
