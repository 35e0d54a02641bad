"""Boot artifacts: fetching, verifying and building the images that nodes boot."""
