"""Flows: Φ, gradient flow, the limiting flows on the manifold of minimisers, diagnostics."""

from ._central import CentralFlow as CentralFlow
from ._central import CentralMetrics as CentralMetrics
from ._central import CentralState as CentralState
from ._central import central_flow as central_flow
from ._central import central_flow_init as central_flow_init
from ._central import central_flow_step as central_flow_step
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
from ._project import ProjectResult as ProjectResult
from ._project import gradient_flow as gradient_flow
from ._project import project as project
from ._project import project_solve as project_solve
from ._sdcp import SDCPSolution as SDCPSolution
from ._sdcp import solve_sdcp as solve_sdcp
