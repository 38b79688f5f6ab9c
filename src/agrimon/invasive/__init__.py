"""Invasive woody vegetation (bush encroachment): features, labels, model, training, inference."""
