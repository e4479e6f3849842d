"""knlp eval's window scheme, for the reference scripts that score a token file as knlp does.

Windows of T tokens tile the file from its start without overlap; when they leave targets
unscored, one last window ends at the file's final token and scores only the targets no
earlier window did (train/evaluate.cpp, evaluate_file).
"""


def eval_windows(n, t):
    """(t, starts, covered, tail) for n tokens and context t: t clamped to n - 1, the window
    starts, how many targets the tiling windows cover, and whether a tail window was added."""
    t = min(t, n - 1)
    starts = list(range(0, n - t, t))
    covered = starts[-1] + t if starts else 0
    tail = covered < n - 1
    if tail:
        starts.append(n - t - 1)
    return t, starts, covered, tail


def scored_before(start, j, covered, is_tail):
    """Whether target j of the window at `start` was already scored by an earlier window."""
    return is_tail and start + j + 1 <= covered
