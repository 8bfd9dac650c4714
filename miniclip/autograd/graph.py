"""print_graph: the computation graph behind a tensor, as indented text.

    >>> print_graph(loss)
    CrossEntropy (,) float64
    └─ Linear (4, 3) float64
       ├─ x (4, 5) float64 leaf
       └─ w (3, 5) float64 leaf, requires_grad
"""


def _label(tensor):
    name = f"{tensor.name} " if tensor.name else ""
    op = type(tensor.grad_fn).__name__ if tensor.grad_fn is not None else "leaf"
    grad = ", requires_grad" if tensor.is_leaf and tensor.requires_grad else ""
    return f"{name}{op} {tensor.shape} {tensor.dtype}{grad}"


def format_graph(tensor, max_lines=200):
    """The graph as a string; a node reached twice is printed once, then referred to."""
    lines, seen = [], set()
    stack = [(tensor, "", "", "")]          # (tensor, prefix of its line, of its children, connector)
    while stack and len(lines) < max_lines:
        t, prefix, child_prefix, connector = stack.pop()
        if id(t) in seen:
            lines.append(f"{prefix}{connector}(shared) {_label(t)}")
            continue
        seen.add(id(t))
        lines.append(f"{prefix}{connector}{_label(t)}")
        parents = list(t.grad_fn.inputs) if t.grad_fn is not None else []
        for n, parent in reversed(list(enumerate(parents))):
            last = n == len(parents) - 1
            stack.append((parent, child_prefix, child_prefix + ("   " if last else "│  "),
                          "└─ " if last else "├─ "))
    if stack:
        lines.append(f"... (graph continues; raise max_lines={max_lines} to see more)")
    return "\n".join(lines)


def print_graph(tensor, max_lines=200):
    print(format_graph(tensor, max_lines))
