"""Ignition spec 3.3.0 model, merge, Butane snippet translation and cloud-init rendering."""
