"""Curvature of a loss: Hessian-vector products, top eigenpairs, trace and spectral density."""

from ._density import SpectralDensity as SpectralDensity
from ._density import spectral_density as spectral_density
from ._eigen import EigenResult as EigenResult
from ._eigen import EigenRESULTS as EigenRESULTS
from ._eigen import sharpness as sharpness
from ._eigen import top_eigenpairs as top_eigenpairs
from ._lanczos import LanczosResult as LanczosResult
from ._lanczos import lanczos as lanczos
from ._operator import HessianOperator as HessianOperator
from ._operator import hessian_operator as hessian_operator
from ._power import PowerResult as PowerResult
from ._power import power_iteration as power_iteration
from ._preconditioned import PreconditionedHessian as PreconditionedHessian
from ._preconditioned import generalized_eigenvectors as generalized_eigenvectors
from ._preconditioned import preconditioned_hessian as preconditioned_hessian
from ._preconditioned import preconditioned_sharpness as preconditioned_sharpness
from ._trace import TraceResult as TraceResult
from ._trace import hutchinson_trace as hutchinson_trace
