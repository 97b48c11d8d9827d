"""Are two models' test accuracies really different? A paired check on the same rows.

Two ONNX files of the same recipe's data (e.g. the same stage of two runs) are run on the
recipe's test split; of the rows they disagree on, how many only the first gets right and
how many only the second, and McNemar's exact two-sided test on those rows. A 0.05-point
difference on 10,000 images is 5 rows: this says whether that is more than noise.

Usage:
    python scripts/paired_accuracy.py recipes/fashion-mnist.toml \
        RUN_A/prune/model.onnx RUN_B/prune/model.onnx
"""

from __future__ import annotations

import argparse
from math import comb


def exact_two_sided(a: int, b: int) -> float:
    """McNemar's exact test: the chance of a split at least this uneven under a fair coin."""
    n, k = a + b, min(a, b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("first")
    parser.add_argument("second")
    args = parser.parse_args()

    from compress.data import load_data
    from compress.recipe import load_recipe
    from compress.runtime.evaluate import onnx_logits

    recipe = load_recipe(args.recipe)
    bundle = load_data(recipe.data, seed=recipe.seed)
    labels = bundle.test.y.numpy()
    right = [
        onnx_logits(path, bundle.test, bundle.signature).argmax(1) == labels
        for path in (args.first, args.second)
    ]
    only_first = int((right[0] & ~right[1]).sum())
    only_second = int((right[1] & ~right[0]).sum())
    print(
        f"accuracy {right[0].mean():.4f} vs {right[1].mean():.4f}; right only in the first "
        f"{only_first}, only in the second {only_second}; exact two-sided p = "
        f"{exact_two_sided(only_first, only_second):.3f}"
    )


if __name__ == "__main__":
    main()
