"""Flows: Φ, gradient flow, the limiting flows on the manifold of minimisers, diagnostics."""

from ._diagnostics import harmonic_sum as harmonic_sum
from ._diagnostics import phi_diagnostics as phi_diagnostics
from ._diagnostics import stableness as stableness
from ._diagnostics import two_step_sqrt_loss as two_step_sqrt_loss
from ._geometry import eigen_gap as eigen_gap
from ._geometry import sharpness_and_gradient as sharpness_and_gradient
from ._geometry import tangent_project as tangent_project
from ._geometry import tangent_projector as tangent_projector
from ._limiting import CONSTANTS as CONSTANTS
from ._limiting import LimitingFlow as LimitingFlow
from ._limiting import flow_field as flow_field
from ._limiting import limiting_flow as limiting_flow
from ._limiting import reprojection_flow as reprojection_flow
from ._project import FlowRESULTS as FlowRESULTS
from ._project import GradientFlowSolution as GradientFlowSolution
from ._project import ProjectionError as ProjectionError
from ._project import ProjectResult as ProjectResult
from ._project import gradient_flow as gradient_flow
from ._project import project as project
from ._project import project_solve as project_solve
from ._start import distance_estimate as distance_estimate
from ._start import phase_one_distance as phase_one_distance
from ._start import prediction_start as prediction_start
