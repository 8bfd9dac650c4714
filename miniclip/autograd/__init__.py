"""miniclip's autograd: Tensor, Function, no_grad, gradcheck and debugging aids."""
from miniclip.autograd.tensor import Tensor, no_grad, is_grad_enabled, as_tensor
from miniclip.autograd.function import Function
from miniclip.autograd.anomaly import detect_anomaly
from miniclip.autograd.gradcheck import gradcheck, GradcheckError
from miniclip.autograd.graph import print_graph, format_graph

__all__ = ["Tensor", "Function", "no_grad", "is_grad_enabled", "as_tensor",
           "detect_anomaly", "gradcheck", "GradcheckError", "print_graph", "format_graph"]
