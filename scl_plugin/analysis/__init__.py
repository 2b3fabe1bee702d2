"""Representation analyses of trained methods (the SCL paper's Sec. 5 and issue 19).

  retrieval       frozen features of a labelled dataset, k-NN retrieval and accuracy, retrieval grids
  spectra         singular-value spectra / explained variance of feature matrices
  alignment       alignment and uniformity of L2-normalised embeddings (Wang & Isola, 2020)
  feature_reuse   per-layer linear CKA before / after inner-loop adaptation (Raghu et al., 2020)
  convergence     did a run converge (validation still rising in the last fifth?), what it consumed

Plotting uses matplotlib's Agg backend and is imported lazily, so importing this package stays cheap.

Example (``model(x) -> (B, d)`` pooled features; ``data.train_meta`` / ``data.test_meta`` of a
:class:`~scl_plugin.data.FewShotData` are such labelled datasets)::

    >>> import tempfile, pathlib, torch
    >>> from scl_plugin.backbones import create_backbone
    >>> model = create_backbone("conv4", in_chans=1, image_size=28, hidden=8)
    >>> train = torch.utils.data.TensorDataset(torch.rand(20, 1, 28, 28), torch.arange(4).repeat(5))
    >>> test = torch.utils.data.TensorDataset(torch.rand(8, 1, 28, 28), torch.arange(4).repeat(2))
    >>> ref, ref_y, ref_i = extract_dataset_features(model, train, max_per_class=4, progress=False)
    >>> qry, qry_y, qry_i = extract_dataset_features(model, test, progress=False)
    >>> sims, idx = nearest_neighbours(qry, ref, k=3)
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> grid = retrieval_grid(test, train, idx, str(out / "retrieval.png"), k=3, query_ids=qry_i, ref_ids=ref_i)
    >>> spectra = plot_spectra({"test": qry, "train": ref}, str(out / "spectra.png"))
    >>> 0 <= knn_accuracy(qry, qry_y, ref, ref_y, k=1) <= 1
    True
"""
from .convergence import check_curve, convergence, final_stage, plot_curves, read_curve
from .alignment import alignment, alignment_uniformity, class_alignment, plot_alignment_uniformity, uniformity
from .feature_reuse import feature_reuse, layer_outputs, linear_cka, plot_feature_reuse, stage_names
from .retrieval import extract_dataset_features, knn_accuracy, knn_predict, nearest_neighbours, retrieval_grid
from .spectra import plot_spectra, spectrum

__all__ = ["extract_dataset_features", "knn_accuracy", "knn_predict", "nearest_neighbours", "retrieval_grid",
           "spectrum", "plot_spectra",
           "alignment", "class_alignment", "uniformity", "alignment_uniformity", "plot_alignment_uniformity",
           "linear_cka", "stage_names", "layer_outputs", "feature_reuse", "plot_feature_reuse"]
__all__ += ["read_curve", "final_stage", "check_curve", "convergence", "plot_curves"]
