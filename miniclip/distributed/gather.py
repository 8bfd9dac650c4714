"""The all-gather with its gradient, and the gathered ("local") contrastive loss.

W ranks hold b pairs each; the global batch is N = W·b. Rank r computes only
its b rows of the N×N similarity matrix, against every rank's features:

    img_all, txt_all = all_gather(img_r), all_gather(txt_r)         (N, E) each
    logits_i = s · img_r @ txt_allᵀ                                  (b, N)
    logits_t = s · txt_r @ img_allᵀ                                  (b, N)
    L_r = ½ [CE(logits_i, r·b + 0..b−1) + CE(logits_t, r·b + 0..b−1)]  (mean over b rows)

The loss of the big batch is L = (1/W) Σ_r L_r: the same N rows, in W pieces.
Rank r's features appear in every L_r' (as the negatives of rank r'), so

    ∂L/∂img_r = (1/W) Σ_r' ∂L_r'/∂img_r

and Σ_r' of "my rows of your gradient" is a reduce-scatter (sum): the
backward of the all-gather. After each rank backpropagates through its own
towers, the mean over ranks of the parameter gradients is ∂L/∂θ of the one
big batch. Dropping the gradient through the gather (gathering plain arrays)
would lose every term r' ≠ r: a wrong gradient, not a slower one.

Memory per rank: the (b, N) logits, not (N, N) (OpenCLIP's `local_loss`).
"""
import miniclip.functional as F
from miniclip.autograd.function import Function
from miniclip.loss import clip_loss


class AllGather(Function):
    """x (b, E) on each rank -> (W·b, E), every rank's rows in rank order."""

    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        return comm.all_gather(x)

    @staticmethod
    def backward(ctx, grad):
        # grad (W·b, E) = ∂L_r/∂(gathered) on rank r; my rows, summed over ranks: Σ_r' ∂L_r'/∂x
        return ctx.comm.reduce_scatter_sum(grad)


def all_gather(x, comm):
    """Every rank's rows of x (a Tensor), with the gradient flowing back to each rank's own."""
    return AllGather.apply(x, comm=comm)


def gathered_clip_loss(image_features, text_features, logit_scale, comm, positives=None):
    """This rank's share L_r of the big batch's CLIP loss (mean over ranks = the big loss).

    image_features, text_features: (b, E) normalised Tensors, this rank's rows.
    logit_scale: the model's log-temperature Parameter (s = e^logit_scale).
    positives: None, or (b, N) soft targets: this rank's rows of the global (N, N) matrix.
    Returns (loss L_r, logits_per_image (b, N) and logits_per_text (b, N) as arrays,
    offset r·b): four values.
    """
    image_all = all_gather(image_features, comm)                      # (N, E)
    text_all = all_gather(text_features, comm)                        # (N, E)
    scale = logit_scale.exp()
    logits_per_image = scale * (image_features @ text_all.T)          # (b, N): my images, all captions
    logits_per_text = scale * (text_features @ image_all.T)           # (b, N): my captions, all images
    offset = comm.rank * image_features.shape[0]                      # my pair i is column offset + i
    loss = clip_loss(logits_per_image, logits_per_text, positives, offset=offset)
    return loss, logits_per_image.data, logits_per_text.data, offset


def normalized_features(model, images, ids):
    """(image, text) features of a CLIP, each row of unit length: (b, E), (b, E)."""
    return (F.normalize(model.encode_image(images), axis=-1),
            F.normalize(model.encode_text(ids), axis=-1))
