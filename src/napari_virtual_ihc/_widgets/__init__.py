"""Qt/magicgui widgets: collect parameters, start thread_workers, show results. No logic of their own."""
