"""Product writers: COGs, STAC catalog and manifest."""
