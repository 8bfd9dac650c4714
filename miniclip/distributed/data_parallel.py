"""Data-parallel training with the gathered loss (or SigLIP's ring), and gradient caching.

On several processes, or with gradient caching (--accum-freq K > 1), the training
loop (miniclip/train.py) replaces its written-out model / loss / backward by one
`ContrastiveStep` call per optimiser step:

    optimizer.zero_grad()
    result = dp_step(images, ids, groups)  # forward + backward over the whole global batch
    clip_grad_norm(...); optimizer.step()  # as in one process: every rank holds ∂L/∂θ

Global batch of B pairs, W ranks, K chunks per rank (--accum-freq K):
rank r takes rows r·B/W .. (r+1)·B/W of the batch a single process would use
(`batch_rows`), and encodes them K chunks of b = B/(W·K) rows at a time.

One process, K = 1: model(images, ids), the loss, backward: the loop's own step
(ContrastiveStep does the same, for lessons and tests that call it directly).
K = 1: encode the B/W rows with the graph, gathered loss, backward.
A SigLIP model (config.loss "siglip") uses ring_siglip_loss (ring.py) where CLIP's
loss gathers: no rank holds the whole batch's features, only its neighbour's.
K > 1 (gradient caching, Gao et al. 2021, "Scaling Deep Contrastive Learning
Batch Size under Memory Limited Setup"):
    1. features of all K chunks without a graph        (no activations kept)
    2. gathered loss on those features as leaf Tensors, backward: ∂L/∂features
       (and logit_scale's and logit_bias's gradients, which only the loss uses)
    3. for each chunk: encode it again with the graph and backpropagate its
       slice of ∂L/∂features: Σ(features · cached gradient).backward()
Same gradient as one pass over the B/W rows (up to summation order), with
the activation memory of b rows; the price is a second forward pass.

Then the gradients are averaged over ranks (one all-reduce of a flat buffer,
which also carries the loss and the accuracies), so each rank holds the
gradient of the big batch's loss L = (1/W) Σ_r L_r.
"""
import hashlib
from dataclasses import dataclass

import numpy as np

from miniclip import backend
from miniclip.autograd.tensor import Tensor, no_grad
from miniclip.distributed.gather import gathered_clip_loss, normalized_features
from miniclip.distributed.ring import ring_accuracy, ring_siglip_loss
from miniclip.loss import batch_accuracy, clip_loss, siglip_loss


def batch_rows(batch_size, comm, accum_freq=1):
    """This rank's slice of the rows of each global batch; refuses sizes that do not split."""
    world = comm.world_size
    if accum_freq < 1:
        raise ValueError(f"accum_freq={accum_freq}: use 1 (no gradient caching) or more chunks")
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} does not split over {world} processes: "
                         f"every rank takes batch_size / {world} rows of each batch; use a "
                         f"multiple of {world}, e.g. {batch_size // world * world or world}")
    local = batch_size // world
    if local % accum_freq:
        raise ValueError(f"accum_freq={accum_freq} does not divide the {local} rows each "
                         f"process takes (batch_size={batch_size} over {world}): use a batch "
                         f"size that is a multiple of {world * accum_freq}")
    return slice(comm.rank * local, (comm.rank + 1) * local)


def positives_rows(groups, all_groups, xp, loss="clip"):
    """Targets (b, N) of the global pairs j that mean the same as my pair i: for clip_loss,
    row i spreads 1 over them (soft targets); for siglip_loss, 1 there and 0 elsewhere.

    groups: (b,) this rank's rows; all_groups: (N,) the global batch's (rank order).
    Row i equals row offset + i of the single-process (N, N) matrix.
    """
    same = (groups[:, None] == all_groups[None, :]).astype(np.float32)
    return xp.asarray(same if loss == "siglip" else same / same.sum(axis=1, keepdims=True))


@dataclass
class StepResult:
    loss: float            # the global batch's loss (mean over ranks of L_r)
    acc_i2t: float | None  # image→text accuracy over the global batch (None: not asked for)
    acc_t2i: float | None  # text→image accuracy


class ContrastiveStep:
    """Forward and backward of the model's loss (model.config.loss: CLIP's or SigLIP's)
    over one global batch.

    model: a CLIP; comm: a Communicator (miniclip.distributed.comm); accum_freq: K chunks.
    Calling it with this rank's rows (images (B/W, 3, R, R), ids (B/W, C), groups (B/W,)
    or None) adds the big batch's gradient to every parameter's .grad (start from
    optimizer.zero_grad()) and returns a StepResult, identical on every rank
    (accuracy=False: without the batch accuracies, which cost extra work).
    """

    def __init__(self, model, comm, accum_freq=1):
        if accum_freq < 1:
            raise ValueError(f"accum_freq={accum_freq}: use 1 (no gradient caching) or more")
        self.model, self.comm, self.accum_freq = model, comm, accum_freq
        self.loss = model.config.loss                          # "clip" or "siglip"

    def __call__(self, images, ids, groups=None, accuracy=True):
        model, comm = self.model, self.comm
        xp = backend.get_array_module(model.logit_scale.data)
        if comm.world_size == 1 and self.accum_freq == 1:       # one process: the loop's own step
            logits_per_image, logits_per_text = model(images, ids)     # (B, B) each
            positives = None if groups is None else positives_rows(groups, groups, xp, self.loss)
            if self.loss == "siglip":
                loss = siglip_loss(logits_per_image, positives=positives)
            else:
                loss = clip_loss(logits_per_image, logits_per_text, positives)
            loss.backward()
            # the accuracies cost two device reads: only on the steps that log them
            return StepResult(float(loss.item()), *(batch_accuracy(logits_per_image) if accuracy
                                                    else (None, None)))
        positives = None
        if groups is not None:
            groups = np.asarray(groups)
            positives = positives_rows(groups, comm.all_gather(groups), xp, self.loss)   # (B/W, B)
        if self.accum_freq == 1:
            loss, accuracies = self._loss(*normalized_features(model, images, ids), positives, accuracy)
            loss.backward()
        else:
            loss, accuracies = self._cached(images, ids, positives, accuracy)
        stats = self._average_gradients([float(loss.item()), *(accuracies if accuracy else (0.0, 0.0))])
        return StepResult(stats[0], *(stats[1:] if accuracy else (None, None)))

    def _loss(self, image_features, text_features, positives, accuracy):
        """This rank's share L_r of the global loss, and its (image→text, text→image) batch
        accuracies (None unless `accuracy`): CLIP's gathered loss, or SigLIP's ring."""
        model, comm = self.model, self.comm
        if self.loss == "siglip":        # text features go round the ring: no all-gather
            loss, _ = ring_siglip_loss(image_features, text_features, model.logit_scale,
                                       model.logit_bias, comm, positives)
            return loss, (ring_accuracy(image_features.data, text_features.data, comm)
                          if accuracy else None)
        loss, logits_i, logits_t, offset = gathered_clip_loss(
            image_features, text_features, model.logit_scale, comm, positives)
        return loss, batch_accuracy(logits_i, logits_t, offset) if accuracy else None

    def _cached(self, images, ids, positives, accuracy):
        """Gradient caching: features without a graph, ∂L/∂features, then chunk by chunk."""
        model, K = self.model, self.accum_freq
        chunks = [slice(k * len(images) // K, (k + 1) * len(images) // K) for k in range(K)]
        with no_grad():                                           # 1. features, no activations kept
            feats = [normalized_features(model, images[c], ids[c]) for c in chunks]
        xp = backend.get_array_module(feats[0][0].data)
        image_features = Tensor(xp.concatenate([f[0].data for f in feats]), requires_grad=True)
        text_features = Tensor(xp.concatenate([f[1].data for f in feats]), requires_grad=True)
        loss, accuracies = self._loss(image_features, text_features, positives, accuracy)
        loss.backward()                                           # 2. loss and ∂L/∂features
        for c in chunks:                                          # 3. re-encode with the graph
            image_k, text_k = normalized_features(model, images[c], ids[c])
            surrogate = ((image_k * Tensor(image_features.grad[c])).sum()
                         + (text_k * Tensor(text_features.grad[c])).sum())
            surrogate.backward()          # ∂surrogate/∂features = the cached ∂L/∂features
        return loss, accuracies

    def _average_gradients(self, stats):
        """Mean over ranks of every .grad (of the parameters that are trained), and of
        `stats`, in one all-reduce; returns stats."""
        if self.comm.world_size == 1:
            return stats
        params = [p for p in self.model.parameters() if p.requires_grad]   # not a fixed temperature
        xp = backend.get_array_module(params[0].data)
        dtype = params[0].dtype
        grads = [p.grad if p.grad is not None else xp.zeros_like(p.data) for p in params]
        flat = xp.concatenate([g.reshape(-1).astype(dtype, copy=False) for g in grads]
                              + [xp.asarray(stats, dtype=dtype)])
        flat = self.comm.all_reduce_mean(flat)                  # (1/W) Σ_r
        start = 0
        for p in params:
            mean = flat[start:start + p.size].reshape(p.shape)
            if p.grad is None:
                p.grad = mean
            else:                         # in place: the array backward gave this parameter
                p.grad[...] = mean
            start += p.size
        return [float(v) for v in flat[start:]]


def broadcast_parameters(model, comm):
    """Every rank starts from rank 0's parameters."""
    if comm.world_size == 1:
        return
    for param in model.parameters():
        param.data[...] = comm.broadcast(param.data)


def parameters_digest(model):
    """A SHA-256 of every parameter's bytes, in order (equal digests: identical models)."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(backend.to_numpy(value)).tobytes())
    return digest.hexdigest()


def check_parameters_identical(model, comm, step):
    """Raise unless every rank holds bit-identical parameters (checked at each checkpoint)."""
    if comm.world_size == 1:
        return
    digests = comm.all_gather_object(parameters_digest(model))
    if len(set(digests)) != 1:
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        raise RuntimeError(f"at step {step} the parameters of rank(s) {differ} differ from "
                           f"rank 0's: the ranks no longer train one model (a rank ran "
                           f"different code or data); restart from the last checkpoint")


def agree(comm, fraction, stop):
    """Rank 0's progress fraction and 'stop' if any rank wants to stop, on every rank.

    With --time-budget the schedule follows the clock, and clocks differ: every rank
    must use the same learning rate and leave the loop at the same step.
    """
    if comm.world_size == 1:
        return fraction, stop
    mine = np.array([fraction if comm.rank == 0 else -np.inf, 1.0 if stop else 0.0])
    fraction, stop = comm.all_reduce_max(mine)
    return float(fraction), bool(stop)
