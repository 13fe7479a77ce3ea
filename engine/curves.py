"""results.csv and curves.png from the per-epoch history (a list of dicts, one per epoch)."""
import csv
import io

from misc.figure import newFigure
from misc.files import atomicWrite

COLUMNS = ["epoch", "trainBox", "trainCls", "trainDfl", "valBox", "valCls", "valDfl", "lr", "frozen", "mAP50", "mAP5095",
           "fitness", "seconds", "trainSeconds", "dataSeconds", "validationSeconds"]  # seconds: the whole epoch;
# fitness: the number the best checkpoint maximises, = mAP5095 of its row (engine/trainer.py fitness)


def writeHistoryCsv(history, path):
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("{:.6g}".format(v) if isinstance(v, float) else v) for k, v in row.items()})
    atomicWrite(path, lambda f: f.write(text.getvalue().encode()))


def writeCurves(history, path):
    """Losses (train and validation), learning rate and mAP (when measured) against the epoch."""
    if not history:
        return
    epochs = [r["epoch"] for r in history]
    fig = newFigure((20, 3.6))
    axes = fig.subplots(1, 5)
    for ax, part in zip(axes[:3], ("Box", "Cls", "Dfl")):
        ax.plot(epochs, [r["train" + part] for r in history], "o-", label="train", markersize=3)
        val = [(r["epoch"], r["val" + part]) for r in history if "val" + part in r]
        if val:
            ax.plot(*zip(*val), "s-", label="validation", markersize=3)
        ax.set_title(part.lower() + " loss")
        ax.legend()
    axes[3].plot(epochs, [r["lr"] for r in history], "o-", markersize=3)
    axes[3].set_title("learning rate (end of epoch)")
    measured = [(r["epoch"], r["mAP50"], r["mAP5095"]) for r in history if "mAP50" in r]
    if measured:
        e, m50, m5095 = zip(*measured)
        axes[4].plot(e, m50, "o-", label="mAP50 (VOC)", markersize=3)
        axes[4].plot(e, m5095, "s-", label="mAP50-95 (COCO) = fitness", markersize=3)
        axes[4].legend()
    axes[4].set_title("validation mAP" if measured else "mAP (not measured during training)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomicWrite(path, lambda f: fig.savefig(f, dpi=80, format="png"))
