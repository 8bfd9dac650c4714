"""The one switch between the plain ops and the fast ones.

miniclip has two tiers of ops. The plain tier (this package: ops.py, nn_ops.py,
conv_ops.py, and optim.AdamW) is what you read and step through: whole-array
NumPy/CuPy calls on one thread, each forward and backward a few lines. The
fast tier (miniclip/fast/) does the same arithmetic in blocks of rows on a
thread pool, in place (the AdamW update too); tests hold it equal to the plain
tier. The fast tier registers its versions
here by the plain op's name, and every call site asks `op(Plain)` which class
to run:

    nn_ops.LayerNorm           the plain op, always available
    op(nn_ops.LayerNorm)       fast.nn_ops.LayerNorm when the fast tier is on, else the plain one

The fast tier is on unless
  - a debugger is attached (a trace function is set: pdb, VS Code, PyCharm;
    or, on Python 3.12+, a debugger registered with sys.monitoring),
    so that `s` lands in the plain op's math and a breakpoint in a backward
    stops for every row (a one-line notice says so, once); or
  - you ask for the plain tier: MINICLIP_PLAIN=1 in the environment, or
    `miniclip.use_plain(True)`, or `with miniclip.plain_ops(): ...`.
Both tiers give the same numbers to rounding (most ops bit for bit).
"""
import contextlib
import os
import sys



def plain_from_environment():
    """True when MINICLIP_PLAIN is set to anything but "" or "0"."""
    return os.environ.get("MINICLIP_PLAIN", "").strip() not in ("", "0")


_fast = {}                                # op name -> its fast version, filled by miniclip/fast/
_plain_asked = plain_from_environment()   # the plain tier asked for (use_plain)
_told = False           # the debugger notice is printed once

NOTICE = ("miniclip: debugger attached — running the plain ops on the main thread "
          "(same numbers as the fast tier, to rounding; docs/debugging.md)")


def register_fast(name, fast_version):
    """Make `fast_version` replace the plain op (or optimiser step) called `name`."""
    _fast[name] = fast_version
    return fast_version


def use_plain(plain=True):
    """Run the plain tier (True) or the fast tier (False) from now on; None: back to the
    environment's choice (MINICLIP_PLAIN=1 means plain)."""
    global _plain_asked
    if plain is None:
        plain = plain_from_environment()
    _plain_asked = bool(plain)


@contextlib.contextmanager
def plain_ops():
    """Run the plain tier inside this block: `with miniclip.plain_ops(): loss.backward()`."""
    previous = _plain_asked
    use_plain(True)
    try:
        yield
    finally:
        use_plain(previous)


def debugger_attached():
    """True when a debugger traces this thread: a trace function is set (pdb, VS Code,
    coverage tools too), or, on Python 3.12+, a debugger registered with sys.monitoring."""
    if sys.gettrace() is not None:
        return True
    monitoring = getattr(sys, "monitoring", None)
    return monitoring is not None and monitoring.get_tool(monitoring.DEBUGGER_ID) is not None


def fast_enabled():
    """True when the fast tier runs: not asked for plain, no debugger attached."""
    if _plain_asked:
        return False
    if debugger_attached():
        _say_once()
        return False
    return True


def op(plain):
    """The class to run for op class `plain`: its fast version when the fast tier is on.

    (fast_enabled() written out, so that `s` in a debugger passes through few lines.)"""
    if sys.gettrace() is None and not _plain_asked and not debugger_attached():
        return _fast.get(plain.__name__, plain)
    if not _told:
        _say_once()
    return plain


def fast_version(name):
    """The fast version registered as `name` when the fast tier is on, else None."""
    return _fast.get(name) if fast_enabled() else None


def _say_once():
    """Print NOTICE once, when a debugger (not the user's choice) selects the plain tier."""
    global _told
    if not _told and not _plain_asked and debugger_attached():
        _told = True
        print(NOTICE, file=sys.stderr)
