"""Curvature of a loss: Hessian-vector products, top eigenpairs, trace, spectral density and
the curvature mini-batch SGD sees (batch sharpness)."""

from ._batch import BatchSharpnessResult as BatchSharpnessResult
from ._batch import MinibatchSharpnessResult as MinibatchSharpnessResult
from ._batch import batch_sharpness as batch_sharpness
from ._batch import minibatch_sharpness as minibatch_sharpness
from ._density import SpectralDensity as SpectralDensity
from ._density import smoothing_width as smoothing_width
from ._density import spectral_density as spectral_density
from ._eigen import EigenResult as EigenResult
from ._eigen import EigenRESULTS as EigenRESULTS
from ._eigen import sharpness as sharpness
from ._eigen import top_eigenpairs as top_eigenpairs
from ._lanczos import LanczosResult as LanczosResult
from ._lanczos import lanczos as lanczos
from ._operator import HessianOperator as HessianOperator
from ._operator import hessian_operator as hessian_operator
from ._operator import sum_over_batches as sum_over_batches
from ._power import PowerResult as PowerResult
from ._power import power_iteration as power_iteration
from ._preconditioned import PreconditionedHessian as PreconditionedHessian
from ._preconditioned import generalized_eigenvectors as generalized_eigenvectors
from ._preconditioned import preconditioned_hessian as preconditioned_hessian
from ._preconditioned import preconditioned_sharpness as preconditioned_sharpness
from ._results import RESULTS as RESULTS
from ._trace import TraceResult as TraceResult
from ._trace import hutchinson_trace as hutchinson_trace
