"""Clustering: weight clustering (tfmot cluster_weights), plain (cluster) or sparsity-preserving
(sp_cluster, the paper's joint pruning+clustering: weights pruned to zero stay zero)."""

from __future__ import annotations

from tinyopt.core.errors import NotApplicable
from tinyopt.ml.models import kernels
from tinyopt.ml.training import FineTuning
from tinyopt.params import ClusterParams

_INIT = {
    "kmeans_plus_plus": "KMEANS_PLUS_PLUS",
    "linear": "LINEAR",
    "density_based": "DENSITY_BASED",
    "random": "RANDOM",
}


class Cluster(FineTuning):
    """Share `clusters` values per layer kernel, fine-tune the centroids, then strip the wrappers."""

    verb = "cluster"

    def __init__(self, token: str, preserve_sparsity: bool):
        self.token, self.preserve_sparsity = token, preserve_sparsity

    def wrap(self, model, settings: ClusterParams, checked):
        import tensorflow as tf
        import tensorflow_model_optimization as tfmot

        from tinyopt.ml.conv1d import tfmot_form

        model, form = tfmot_form(model, "clustered")
        clustering = tfmot.clustering.keras
        options = dict(
            number_of_clusters=settings.clusters,
            preserve_sparsity=self.preserve_sparsity,
            cluster_centroids_init=getattr(clustering.CentroidInitialization, _INIT[settings.init]),
        )
        # A kernel with fewer weights than clusters cannot be clustered (k-means needs as many points).
        sizes = {name: kernel.size for name, kernel in kernels(model).items()}
        small = sorted(name for name, size in sizes.items() if size < settings.clusters)
        if len(small) == len(sizes):
            raise NotApplicable(f"no layer has {settings.clusters} weights or more to cluster")
        if not small:
            return clustering.cluster_weights(model, **options), form

        def clone(layer):
            wanted = layer.name in sizes and layer.name not in small
            return clustering.cluster_weights(layer, **options) if wanted else layer

        notes = f"left unclustered (fewer weights than {settings.clusters} clusters): {', '.join(small)}"
        notes = "; ".join(note for note in (form, notes) if note)
        return tf.keras.models.clone_model(model, clone_function=clone), notes

    def strip(self, model):
        import tensorflow_model_optimization as tfmot

        from tinyopt.ml.conv1d import as_1d_convolutions

        return as_1d_convolutions(tfmot.clustering.keras.strip_clustering(model))


CLUSTER, SP_CLUSTER = Cluster("cluster", preserve_sparsity=False), Cluster("sp_cluster", preserve_sparsity=True)
