"""Crop-yield forecasts per field and region: data, quality checks, baselines, model, backtest."""
