"""SigLIP's loss over several processes without an all-gather: text features go round a ring.

The sigmoid loss is a sum of independent terms, one per (image, caption) pair,
so rank r needs no row of another rank's logits, only their captions' features.
OpenCLIP's SigLipLoss passes them from neighbour to neighbour:

    block 0:  my images against my captions      (b, b), positives on the diagonal
    block k:  my images against rank (r − k)'s   (b, b), negatives only, k = 1..W−1
    L_r = Σ_k −Σ_ij log σ(z_ij · logits_ij) / b

No rank ever holds more than its own b × b block of logits (CLIP's gathered
loss holds b × N). The mean of L_r over ranks is the loss of the global batch
on one process, −Σ_ij log σ(z_ij · logits_ij) / N, so averaging the parameter
gradients over ranks, as data-parallel training does, gives its gradient.

The text features' gradient: rank r's captions were scored on every rank, so
their gradient comes back round the ring the other way (Shift's backward).
Traffic per rank and step: (W − 1) sends of b × E text features forward, the
same back in the backward pass; CLIP's all-gathers move 2 · W · b × E each way.
"""
from miniclip import backend
from miniclip.autograd.function import Function
from miniclip.loss import siglip_loss


class Shift(Function):
    """x (b, E) on every rank -> the x of rank (r − 1) mod W, passed one place round the ring."""

    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        return comm.shift(x, 1)

    @staticmethod
    def backward(ctx, grad):
        # my x went to rank r + 1: its gradient is there, so pass the gradients back one place
        return ctx.comm.shift(grad, -1)


def ring_siglip_loss(image_features, text_features, logit_scale, logit_bias, comm):
    """This rank's share L_r of the global batch's SigLIP loss (mean over ranks = the global loss).

    image_features, text_features: (b, E) normalised Tensors, this rank's pairs.
    logit_scale, logit_bias: the model's parameters (scale e^logit_scale, bias added).
    Returns (loss, logits of my own block (b, b) as an array).
    """
    scale = logit_scale.exp()
    logits = scale * (image_features @ text_features.T) + logit_bias      # my captions: (b, b)
    loss = siglip_loss(logits)                                            # positives on the diagonal
    own_block = logits.data
    for _ in range(comm.world_size - 1):
        text_features = Shift.apply(text_features, comm=comm)             # the next rank's captions
        logits = scale * (image_features @ text_features.T) + logit_bias
        no_match = backend.get_array_module(logits.data).zeros_like(logits.data)
        loss = loss + siglip_loss(logits, positives=no_match)            # negatives only
    return loss, own_block
