"""Many shot folders rendered once each, in this process or as Ray tasks."""
