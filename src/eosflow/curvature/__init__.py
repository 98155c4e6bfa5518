"""Curvature of a loss: Hessian-vector products, top eigenpairs, trace, spectral density and
the curvature mini-batch SGD sees (batch sharpness)."""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "BatchSharpnessResult": "._batch",
    "MinibatchSharpnessResult": "._batch",
    "batch_sharpness": "._batch",
    "minibatch_sharpness": "._batch",
    "SpectralDensity": "._density",
    "smoothing_width": "._density",
    "spectral_density": "._density",
    "EigenResult": "._eigen",
    "EigenRESULTS": "._eigen",
    "sharpness": "._eigen",
    "top_eigenpairs": "._eigen",
    "LanczosResult": "._lanczos",
    "lanczos": "._lanczos",
    "HessianOperator": "._operator",
    "hessian_operator": "._operator",
    "sum_over_batches": "._operator",
    "PowerResult": "._power",
    "power_iteration": "._power",
    "PreconditionedHessian": "._preconditioned",
    "generalized_eigenvectors": "._preconditioned",
    "preconditioned_hessian": "._preconditioned",
    "preconditioned_sharpness": "._preconditioned",
    "RESULTS": "._results",
    "TraceResult": "._trace",
    "extrapolated_start": "._tracking",
    "push_warm_start": "._tracking",
    "tracking_history": "._tracking",
    "hutchinson_trace": "._trace",
})
