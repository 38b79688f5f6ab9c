"""Index stage: masks, indices, composites, phenology and zonal statistics (xarray, dask)."""
