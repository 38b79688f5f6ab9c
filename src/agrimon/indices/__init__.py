"""Index stage: masks, spectral indices and temporal composites (xarray + dask)."""
