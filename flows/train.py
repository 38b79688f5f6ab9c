"""The ``train-invasive`` flow: features → labels → spatial cross-validation → checkpoint.

Thin by design: one task calls :func:`agrimon.invasive.pipeline.run_training`, which writes
the checkpoint folder atomically; the flow adds Prefect's run record, retries and
scheduling (retrain when new labels arrive) around it.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from agrimon.invasive.pipeline import TrainJob, check_train_job, run_training


@task(name="check training inputs", cache_policy=NO_CACHE)
def check(job: TrainJob) -> None:
    """Every problem findable before any pixel is computed (labels, features, folder)."""
    check_train_job(job)


@task(name="train and cross-validate", cache_policy=NO_CACHE)
def train(job: TrainJob) -> Path:
    """Compute the features, cross-validate the candidates and baselines, fit, write."""
    return run_training(job)


@flow(name="train-invasive", log_prints=True)
def train_invasive(job: TrainJob) -> Path:
    """Train the encroachment model; returns the checkpoint folder."""
    check(job)
    return train(job)
