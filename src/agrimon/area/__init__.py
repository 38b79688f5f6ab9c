"""Polygons, sample design and area-adjusted estimates of a class map."""
