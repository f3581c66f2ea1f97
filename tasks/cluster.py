"""Clustering step: weight clustering (tfmot cluster_weights), plain or sparsity-preserving."""

from __future__ import annotations

from pathlib import Path

from tasks.train import TRAINING_LOCK, ModelRecord, compile_for_task, fit, record_model, set_seeds
from tinyopt.errors import NotApplicable
from tinyopt.models import kernels, load_model
from tinyopt.params import ClusterParams, TaskParams, TrainParams
from tinyopt.steps import step_task

_INIT = {
    "kmeans_plus_plus": "KMEANS_PLUS_PLUS",
    "linear": "LINEAR",
    "density_based": "DENSITY_BASED",
    "random": "RANDOM",
}


def cluster_model(
    parent: Path,
    prepared: Path,
    settings: ClusterParams,
    train: TrainParams,
    task: TaskParams,
    seed: int,
    out_dir: Path,
    preserve_sparsity: bool = False,
) -> ModelRecord:
    """Share `clusters` values per layer kernel, fine-tune the centroids, then strip the wrappers.
    With preserve_sparsity, weights pruned to zero stay zero (the paper's joint pruning+clustering)."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    from tasks.data import load_prepared

    clustering = tfmot.clustering.keras
    data = load_prepared(prepared)
    options = dict(
        number_of_clusters=settings.clusters,
        preserve_sparsity=preserve_sparsity,
        cluster_centroids_init=getattr(clustering.CentroidInitialization, _INIT[settings.init]),
    )
    with TRAINING_LOCK:
        set_seeds(seed)
        model = load_model(parent)  # a fresh copy: tfmot wrappers share layers with what they wrap
        # A kernel with fewer weights than clusters cannot be clustered (k-means needs as many points).
        sizes = {name: kernel.size for name, kernel in kernels(model).items()}
        small = sorted(name for name, size in sizes.items() if size < settings.clusters)
        if len(small) == len(sizes):
            raise NotApplicable(f"no layer has {settings.clusters} weights or more to cluster")

        def clone(layer):
            wanted = layer.name in sizes and layer.name not in small
            return clustering.cluster_weights(layer, **options) if wanted else layer

        try:
            clustered = (
                tf.keras.models.clone_model(model, clone_function=clone)
                if small
                else clustering.cluster_weights(model, **options)
            )
        except (ValueError, RuntimeError, TypeError) as exc:
            raise NotApplicable(f"tfmot cannot cluster this model: {str(exc).splitlines()[0][:200]}") from None
        notes = (
            f"left unclustered (fewer weights than {settings.clusters} clusters): {', '.join(small)}" if small else ""
        )
        compile_for_task(clustered, task, settings.learning_rate)
        epochs_run, seconds = fit(clustered, data, settings.fine_tune_epochs, train.batch_size)
        stripped = clustering.strip_clustering(clustered)
        return record_model(
            stripped,
            data,
            task,
            "sp_cluster" if preserve_sparsity else "cluster",
            out_dir / "model.keras",
            parent=parent,
            epochs_run=epochs_run,
            train_seconds=seconds,
            notes=notes,
        )


cluster_task = step_task(cluster_model)
