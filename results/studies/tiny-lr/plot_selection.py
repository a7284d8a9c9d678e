"""The selection at a glance: each variant's final val_loss (what the selection reads) and final
in-training accuracy (never read by it) against the learning rate, one dot per seed, the mean as a line.
Run from the repository root: python results/studies/tiny-lr/plot_selection.py"""

import json
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STUDY = Path(__file__).parent
finals = defaultdict(lambda: defaultdict(list))  # variant label -> lr -> [(val_loss, accuracy) per seed]
for metrics in sorted((STUDY / "tiny-lr").glob("*/metrics.jsonl")):
    last = [json.loads(line) for line in metrics.read_text().splitlines() if '"eval"' in line][-1]
    label, rest = metrics.parent.name.split("-lr")
    lr = float(rest.rsplit("-s", 1)[0])
    finals[label][lr].append((last["val_loss"], last["eval_accuracy"]))

figure, axes = plt.subplots(1, 2, figsize=(10, 4))
for label, by_lr in finals.items():
    lrs = sorted(by_lr)
    for column, (ax, name) in enumerate(zip(axes, ("final val_loss (selects)", "final accuracy, 128 problems"))):
        means = [statistics.fmean(seed[column] for seed in by_lr[lr]) for lr in lrs]
        line = ax.plot(lrs, means, marker="o", label=label)[0]
        ax.scatter([lr for lr in lrs for _ in by_lr[lr]], [seed[column] for lr in lrs for seed in by_lr[lr]],
                   color=line.get_color(), alpha=0.4, s=14)
        best = min(lrs, key=lambda lr: statistics.fmean(seed[0] for seed in by_lr[lr]))
        ax.plot([best], [means[lrs.index(best)]], marker="*", markersize=16, color=line.get_color())
        ax.set(xscale="log", xlabel="peak learning rate", title=name)
        ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs], minor=False)
        ax.minorticks_off()
axes[0].legend(title="star: selected")
figure.tight_layout()
figure.savefig(STUDY / "selection.png", dpi=120)
