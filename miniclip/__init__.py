"""miniclip: CLIP rebuilt from scratch in NumPy (CuPy on a GPU).

    import miniclip as clip
    model, preprocess = clip.load("ViT-B/32")          # OpenAI's weights, no torch
    text = clip.tokenize(["a diagram", "a dog", "a cat"])
    logits_per_image, logits_per_text = model(image, text)
"""
from miniclip.autograd import Tensor, no_grad
from miniclip.autograd.switch import plain_ops, use_plain
from miniclip import fast       # registers the fast ops with the switch (nothing runs yet)
from miniclip import functional
from miniclip.config import CLIPConfig
from miniclip.model import CLIP
from miniclip.loss import clip_loss
from miniclip.tokenizer import tokenize
from miniclip.pretrained import available_models, load

__version__ = "0.1.0"

__all__ = ["Tensor", "no_grad", "functional", "CLIP", "CLIPConfig", "clip_loss", "tokenize",
           "load", "available_models", "use_plain", "plain_ops"]
