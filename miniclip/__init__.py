"""miniclip: CLIP rebuilt from scratch in NumPy (CuPy on a GPU)."""
from miniclip.autograd import Tensor, no_grad
from miniclip import functional

__version__ = "0.1.0"
