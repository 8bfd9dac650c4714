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
same back in the backward pass; CLIP's all-gathers move 2 · W · b × E each way
(docs/distributed.md). The batch accuracies (ring_accuracy, on logging steps only)
send the captions round once more, with 2b numbers each.
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


def ring_siglip_loss(image_features, text_features, logit_scale, logit_bias, comm, positives=None):
    """This rank's share L_r of the global batch's SigLIP loss (mean over ranks = the global loss).

    image_features, text_features: (b, E) normalised Tensors, this rank's pairs.
    logit_scale, logit_bias: the model's parameters (scale e^logit_scale, bias added).
    positives: None (pair i matches caption i alone), or (b, N) 0/1 labels: this rank's
    rows of the global matrix (e.g. captions of the same class on any rank); block k then
    takes the columns of rank (r − k) mod W.
    Returns (loss, logits of my own block (b, b) as an array).
    """
    b = image_features.shape[0]
    xp = backend.get_array_module(image_features.data)

    def labels(k):            # block k: my images against the captions of rank (r − k) mod W
        if positives is None:
            return None if k == 0 else xp.zeros((b, b), dtype=image_features.dtype)   # negatives only
        start = (comm.rank - k) % comm.world_size * b
        return positives[:, start:start + b]

    scale = logit_scale.exp()
    logits = scale * (image_features @ text_features.T) + logit_bias      # my captions: (b, b)
    loss = siglip_loss(logits, positives=labels(0))                       # positives on the diagonal
    own_block = logits.data
    for k in range(1, comm.world_size):
        text_features = Shift.apply(text_features, comm=comm)             # the next rank's captions
        logits = scale * (image_features @ text_features.T) + logit_bias
        loss = loss + siglip_loss(logits, positives=labels(k))
    return loss, own_block


def ring_accuracy(image_features, text_features, comm):
    """(image→text, text→image) accuracy of this rank's pairs against the global batch,
    without gathering it: the captions go round the ring once more (arrays, no graph).

    image_features, text_features: (b, E) arrays, this rank's pairs. Exactly what
    batch_accuracy's argmax over the global batch gives: a row (column) is right when its
    own pair scores above every pair before it and at least as high as every pair after
    it (argmax takes the first of equal scores). Scale and bias change no ranking, so
    the cosine similarities are compared. Each caption travels with the best scores the
    images before and after its own gave it so far, and comes home after W shifts.
    The mean over ranks is the global batch's accuracy.
    """
    xp = backend.get_array_module(image_features)
    b, r = image_features.shape[0], comm.rank
    below = xp.tril(xp.ones((b, b), dtype=bool), -1)                      # row i > column j

    def best(similarities, where, axis):                                  # max over the masked entries
        return xp.where(where, similarities, -xp.inf).max(axis=axis)

    similarities = image_features @ text_features.T                       # (b, b): my pairs
    own = similarities[xp.arange(b), xp.arange(b)]
    caption_before, caption_after = best(similarities, below, 1), best(similarities, below.T, 1)
    image_before, image_after = best(similarities, below.T, 0), best(similarities, below, 0)
    captions = text_features
    for k in range(1, comm.world_size):
        captions, image_before, image_after = (comm.shift(x, 1) for x in (captions, image_before, image_after))
        s = (r - k) % comm.world_size                                     # whose captions these are
        similarities = image_features @ captions.T
        if s < r:      # their captions come before mine in the global batch, my images after theirs
            caption_before = xp.maximum(caption_before, similarities.max(axis=1))
            image_after = xp.maximum(image_after, similarities.max(axis=0))
        else:
            caption_after = xp.maximum(caption_after, similarities.max(axis=1))
            image_before = xp.maximum(image_before, similarities.max(axis=0))
    image_before, image_after = comm.shift(image_before, 1), comm.shift(image_after, 1)   # home
    image_to_text = (own > caption_before) & (own >= caption_after)
    text_to_image = (own > image_before) & (own >= image_after)
    return float(image_to_text.mean()), float(text_to_image.mean())
