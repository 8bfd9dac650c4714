"""The CLIP loss: in a batch of N matching (image, caption) pairs, pair i is
the right answer for row i and for column i of the similarity matrix.

    logits_per_image (N, N): row i = image i against every caption
    logits_per_text  (N, N): row j = caption j against every image

    loss = ½ [CE(logits_per_image, 0..N−1) + CE(logits_per_text, 0..N−1)]

Each cross-entropy is a softmax classification over the batch: "which of
these N captions is mine?" and "which of these N images is mine?".

SigLIP's sigmoid loss (Zhai et al. 2023) asks N² independent yes/no questions
instead, "do image i and caption j match?":

    logits (N, N) = e^t · image_features @ text_featuresᵀ + b
    z_ij = +1 for a matching pair, −1 otherwise
    loss = −Σ_ij log σ(z_ij · logits_ij) / N
"""
import miniclip.functional as F
from miniclip import backend
from miniclip.autograd.tensor import as_array


def clip_loss(logits_per_image, logits_per_text, positives=None, offset=0):
    """The symmetric contrastive loss (a 0-d Tensor).

    positives: optional (N, N) soft targets for when a batch holds several
    right answers (e.g. two images of the same class): row i spreads 1 over the
    captions that match image i. The text side uses its transpose, so its rows
    must sum to 1 too (true for "same class" matrices, which are symmetric).
    None: pair i matches only pair i (OpenAI's loss).

    offset: the local loss of data-parallel training (miniclip.distributed):
    both logits are b rows (b, N) of a global batch of N, row i's pair is
    column offset + i, and positives are the same b rows (b, N) of the global
    matrix, used by both sides (it is symmetric).
    """
    rows, columns = logits_per_image.shape
    if positives is None:
        xp = backend.get_array_module(logits_per_image.data)
        image_targets = text_targets = xp.arange(rows) + offset       # pair i is column offset + i
    else:
        image_targets = as_array(positives)
        image_targets = image_targets.astype(logits_per_image.dtype, copy=False)
        if tuple(image_targets.shape) != (rows, columns):
            raise ValueError(f"positives have shape {tuple(image_targets.shape)}, the logits "
                             f"{(rows, columns)}: give one row of targets per row of logits")
        square = offset == 0 and rows == columns
        text_targets = image_targets.T if square else image_targets
    return (F.cross_entropy(logits_per_image, image_targets)
            + F.cross_entropy(logits_per_text, text_targets)) / 2


def batch_accuracy(logits_per_image, logits_per_text=None, offset=0):
    """(image→text, text→image) accuracy: the fraction of rows, and of columns,
    whose largest entry is on the diagonal.

    With logits_per_text (b, N) and an offset (a rank's rows of a global batch,
    see clip_loss): the fractions of this rank's rows of each whose largest entry
    is column offset + i.
    """
    scores = as_array(logits_per_image)
    xp = backend.get_array_module(scores)
    if logits_per_text is None:
        targets = xp.arange(scores.shape[0])
        image_to_text = float((scores.argmax(axis=1) == targets).mean())
        text_to_image = float((scores.argmax(axis=0) == targets).mean())
        return image_to_text, text_to_image
    text_scores = as_array(logits_per_text)
    targets = xp.arange(scores.shape[0]) + offset
    return (float((scores.argmax(axis=1) == targets).mean()),
            float((text_scores.argmax(axis=1) == targets).mean()))


def siglip_loss(logits, offset=0, positives=None):
    """SigLIP's sigmoid loss (a 0-d Tensor), as OpenCLIP's SigLipLoss computes it.

    logits: (b, N) = e^t · image_features @ text_featuresᵀ + bias, b image rows
    against N texts. Image row i's caption is column offset + i (offset: this
    rank's first row in a global batch), or, with positives (b, N) 0/1, every
    column where positives is 1 (e.g. captions of the same class).
    loss = −Σ_ij log σ(z_ij · logits_ij) / b, z_ij = +1 for a match, −1 otherwise.
    """
    rows, columns = logits.shape
    xp = backend.get_array_module(logits.data)
    if positives is None:
        labels = xp.zeros((rows, columns), dtype=logits.dtype)
        labels[xp.arange(rows), xp.arange(rows) + offset] = 1         # pair i is column offset + i
    else:
        labels = as_array(positives).astype(logits.dtype, copy=False)
        if tuple(labels.shape) != (rows, columns):
            raise ValueError(f"positives have shape {tuple(labels.shape)}, the logits "
                             f"{(rows, columns)}: give one row of 0/1 labels per row of logits")
    signs = 2 * labels - 1                                            # z: +1 match, −1 otherwise
    return -F.log_sigmoid(logits * signs).sum() / rows
