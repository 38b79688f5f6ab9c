"""Index stage: masks, spectral indices, composites, phenology and zonal statistics (xarray + dask)."""
