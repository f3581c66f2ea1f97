"""Clustering step: weight clustering (tfmot cluster_weights), plain or sparsity-preserving."""

from __future__ import annotations

from pathlib import Path

from tasks.train import TRAINING_LOCK, ModelRecord, compile_for_classification, fit, record_model, set_seeds
from tinyopt.models import load_model
from tinyopt.params import ClusterParams, TrainParams
from tinyopt.steps import step_task

_INIT = {"kmeans_plus_plus": "KMEANS_PLUS_PLUS", "linear": "LINEAR", "density_based": "DENSITY_BASED", "random": "RANDOM"}


def cluster_model(parent: Path, prepared: Path, settings: ClusterParams, train: TrainParams, seed: int,
                  out_dir: Path, preserve_sparsity: bool = False) -> ModelRecord:  # fmt: skip
    """Share `clusters` values per layer kernel, fine-tune the centroids, then strip the wrappers.
    With preserve_sparsity, weights pruned to zero stay zero (the paper's joint pruning+clustering)."""
    import tensorflow_model_optimization as tfmot

    from tasks.data import load_prepared

    clustering = tfmot.clustering.keras
    data = load_prepared(prepared)
    with TRAINING_LOCK:
        set_seeds(seed)
        clustered = clustering.cluster_weights(
            load_model(parent),  # a fresh copy: tfmot wrappers share layers with what they wrap
            number_of_clusters=settings.clusters,
            cluster_centroids_init=getattr(clustering.CentroidInitialization, _INIT[settings.init]),
            preserve_sparsity=preserve_sparsity,
        )
        compile_for_classification(clustered, settings.learning_rate)
        epochs_run, seconds = fit(clustered, data, settings.fine_tune_epochs, train.batch_size)
        stripped = clustering.strip_clustering(clustered)
        return record_model(
            stripped, data, "sp_cluster" if preserve_sparsity else "cluster", out_dir / "model.keras",
            parent=parent, epochs_run=epochs_run, train_seconds=seconds,
        )  # fmt: skip


cluster_task = step_task(cluster_model)
