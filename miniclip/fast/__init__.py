"""The fast tier: the plain ops and optimiser step, rearranged for speed.

    parallel.py      a small chunked thread pool for elementwise work, and the thread count
    nn_ops.py        Softmax, LayerNorm, QuickGELU, attention, Linear: blocks of rows, in place
    conv_ops.py      Conv2d's 1×1 case as a batched matmul; BatchNorm2d with BLAS sums
    adamw.py         AdamW's update in place, in blocks on every core
    text.py          the text tower's ids up to the batch's last end token (an exact saving)

Importing this package registers each fast version with the switch
(miniclip/autograd/switch.py) under the plain op's name; `import miniclip`
does that. The fast tier then runs unless a debugger is attached or the plain
tier is asked for (MINICLIP_PLAIN=1, miniclip.use_plain(True),
`with miniclip.plain_ops():`). Tests (tests/test_fast.py) hold every fast op
equal to its plain op. Nothing here runs at import: the thread count is
decided when the pool is first used.
"""
from miniclip.autograd.switch import register_fast
from miniclip.fast import adamw, conv_ops, nn_ops, text

for _op in (nn_ops.Softmax, nn_ops.LayerNorm, nn_ops.QuickGELU, nn_ops.Linear,
            nn_ops.ScaledDotProductAttention, conv_ops.Conv2d, conv_ops.BatchNorm2d):
    register_fast(_op.__name__, _op)
register_fast("AdamW.step", adamw.adamw_step)
register_fast("CLIP.text_ids", text.trim_text_ids)

__all__ = ["adamw", "conv_ops", "nn_ops", "text"]
