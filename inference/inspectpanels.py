"""The pictures of -inspect (matplotlib, Agg canvas): assignment, score maps, teacher vs student maps.

Every panel is drawn over the network input (the letterboxed RGB image the model sees), in network-input pixels:
anchor i of a level with stride s sits at the centre of its cell, ((col + 0.5) s, (row + 0.5) s).
"""
import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from misc.figure import newFigure
from misc.files import atomicWrite

LEVEL_NAMES = ("P3", "P4", "P5")
MARKERS = {8: 3.5, 16: 6.0, 32: 9.0}  # marker radius in points per stride: bigger cells, bigger dots
BOX_COLORS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4",
              "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075")
DPI = 100
MIN_LABELLED_SCORE = 0.01  # score-map peaks below this are not labelled (an untrained map is ~0 everywhere)


def savePng(figure, path):
    """Write the figure atomically as PNG."""
    atomicWrite(path, lambda f: figure.savefig(f, format="png", dpi=DPI))


def showImage(axes, imageRgb, title):
    """imageRgb: uint8 (h, w, 3) network input, shown in network-input pixels (y down)."""
    h, w = imageRgb.shape[:2]
    axes.imshow(imageRgb, extent=(0, w, h, 0), interpolation="nearest")
    axes.set_xlim(0, w)
    axes.set_ylim(h, 0)
    axes.set_title(title, fontsize=8)
    axes.set_xticks([])
    axes.set_yticks([])


def drawBoxes(axes, boxesXyxy, colors, labels=None, linewidth=1.2):
    """boxesXyxy: (n, 4) network-input pixels; one colour per box."""
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxesXyxy, dtype=np.float64).reshape(-1, 4)):
        axes.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colors[i], linewidth=linewidth))
        if labels:
            axes.text(x0, y0 - 1, labels[i], color="white", fontsize=6, va="bottom",
                      bbox={"facecolor": colors[i], "edgecolor": "none", "pad": 1})


def assignmentPanel(imageRgb, boxesXyxy, boxNames, positives, assigned, title, path):
    """Ground-truth boxes and, per box, the anchors the assigner made positive.

    boxesXyxy: (n, 4) network-input pixels; boxNames: n class names; positives: n dicts from
    engine.inspectmaps.positivesPerBox; assigned: engine.inspectmaps.assignment's dict (anchorPixels, strides,
    alignment); boxesXyxy None: no annotation (the title says so). Marker size by stride, colour by box, shade by
    alignment (pale = low, full colour = the box's best anchor).
    """
    figure = newFigure((5.6, 6.2), DPI)
    axes = figure.add_axes((0.02, 0.2, 0.96, 0.72))
    showImage(axes, imageRgb, title)
    if boxesXyxy is None:
        axes.text(0.5, 0.5, "no VOC annotation found:\nno boxes, no assignment", transform=axes.transAxes,
                  ha="center", va="center", fontsize=10, color="white", bbox={"facecolor": "black", "alpha": 0.7})
        savePng(figure, path)
        return
    colors = [BOX_COLORS[i % len(BOX_COLORS)] for i in range(len(boxNames))]
    drawBoxes(axes, boxesXyxy, colors, ["{} {}".format(i + 1, name) for i, name in enumerate(boxNames)])
    handles, totals = [], np.zeros(len(LEVEL_NAMES), dtype=np.int64)
    for i, box in enumerate(positives):
        index = np.asarray(box["anchorIndexes"], dtype=np.int64)
        if len(index):
            strength = assigned["alignment"][index].numpy()
            strength = strength / max(float(strength.max()), 1e-12)  # 1 for the box's best-aligned anchor
            rgba = np.tile(np.append(to_rgb(colors[i]), 1.0), (len(index), 1))
            rgba[:, :3] = 1 - (1 - rgba[:, :3]) * (0.25 + 0.75 * strength[:, None])  # pale -> full colour
            xy = assigned["anchorPixels"][index].numpy()
            sizes = [MARKERS.get(int(s), 5.0) ** 2 for s in assigned["strides"][index].tolist()]
            axes.scatter(xy[:, 0], xy[:, 1], s=sizes, c=rgba, edgecolors="black", linewidths=0.4, zorder=3)
        counts = [box["counts"][name] for name in LEVEL_NAMES]
        totals += counts
        handles.append(Line2D([], [], marker="o", linestyle="", color=colors[i], label="box {} {}: {}".format(
            i + 1, boxNames[i], ", ".join("{} {}".format(n, c) for n, c in zip(LEVEL_NAMES, counts)))))
    handles += [Line2D([], [], marker="o", linestyle="", color="grey", markeredgecolor="black",
                       markersize=MARKERS[s], label="stride {} ({})".format(s, n)) for s, n in zip((8, 16, 32), LEVEL_NAMES)]
    figure.legend(handles=handles, loc="lower center", ncol=2, fontsize=6.5, frameon=False,
                  title="positives per level: " + ", ".join("{} {}".format(n, c) for n, c in zip(LEVEL_NAMES, totals)),
                  title_fontsize=7.5)
    savePng(figure, path)


def scoreMapPanel(imageRgb, levels, boxesXyxy, title, path):
    """Per level the highest class probability at every anchor as a heatmap over the image, the top class at the peaks.

    levels: engine.inspectmaps.scoreMaps's list; boxesXyxy: (n, 4) network-input pixels or None (outlined in white).
    """
    h, w = imageRgb.shape[:2]
    figure = newFigure((10.5, 4.0), DPI)
    grey = np.repeat(imageRgb.mean(2, keepdims=True), 3, axis=2).astype(np.uint8)
    vmax = max(max(float(level["maxScore"].max()) for level in levels), 1e-3)  # one scale for the three levels
    for i, level in enumerate(levels):
        axes = figure.add_axes((0.01 + i * 0.33, 0.1, 0.3, 0.72))
        maxScore = level["maxScore"].numpy()
        showImage(axes, grey, "{} stride {} ({}x{}): max {:.2f}".format(
            LEVEL_NAMES[i], level["stride"], maxScore.shape[0], maxScore.shape[1], float(maxScore.max())))
        image = axes.imshow(maxScore, extent=(0, w, h, 0), cmap="inferno", vmin=0, vmax=vmax, alpha=0.6,
                            interpolation="nearest")
        if boxesXyxy is not None:
            drawBoxes(axes, boxesXyxy, ["white"] * len(boxesXyxy), linewidth=0.8)
        for (x, y), name, score in [p for p in level["peaks"] if p[2] >= MIN_LABELLED_SCORE]:
            axes.plot([x], [y], marker="+", color="cyan", markersize=6)
            axes.text(x + 2, y - 2, "{} {:.2f}".format(name, score), color="cyan", fontsize=6)
    colorbar = figure.add_axes((0.3, 0.05, 0.4, 0.025))
    figure.colorbar(image, cax=colorbar, orientation="horizontal").ax.tick_params(labelsize=6)
    figure.suptitle(title + "\nhighest class probability per anchor (sigmoid)", fontsize=8)
    savePng(figure, path)


def heatmap(figure, rect, values, title, cmap="viridis", centred=False):
    """A (H, W) map in its own axes with a small colour bar; centred: a diverging scale symmetric about 0."""
    axes = figure.add_axes(rect)
    limit = (float(abs(values).max()) or 1.0) if centred else None  # an all-zero map: a plain -1..1 scale
    image = axes.imshow(values, cmap=cmap, interpolation="nearest", vmin=-limit if centred else None, vmax=limit)
    axes.set_title(title, fontsize=7)
    axes.set_xticks([])
    axes.set_yticks([])
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.02).ax.tick_params(labelsize=5)


def cwdPanel(features, title, path):
    """Teacher vs student for each distilled feature: the channel-averaged spatial softmax CWD matches, side by side,
    and each position's share of KL(teacher || student) (red: the teacher attends there more than the student, blue:
    less; the shares sum to the CWD term). features: [(name, shape, engine.inspectmaps.cwdMaps dict)]."""
    rows = len(features)
    figure = newFigure((9.0, 2.1 * rows + 0.7), DPI)
    height = (1 - 0.7 / (2.1 * rows + 0.7)) / rows
    for r, (name, shape, maps) in enumerate(features):
        y = 1 - 0.7 / (2.1 * rows + 0.7) - (r + 1) * height
        vmax = float(max(maps["teacher"].max(), maps["student"].max()))
        for c, (kind, values) in enumerate((("teacher", maps["teacher"]), ("student", maps["student"]))):
            axes = figure.add_axes((0.03 + c * 0.32, y + 0.02, 0.26, height - 0.05))
            image = axes.imshow(values.numpy(), cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
            axes.set_title("{} {} {}: attention".format(kind, name, tuple(shape)), fontsize=7)
            axes.set_xticks([])
            axes.set_yticks([])
            figure.colorbar(image, ax=axes, fraction=0.046, pad=0.02).ax.tick_params(labelsize=5)
        heatmap(figure, (0.68, y + 0.02, 0.26, height - 0.05), maps["kl"].numpy(),
                "{}: KL share per position, CWD = {:.4g}".format(name, maps["value"]), cmap="coolwarm", centred=True)
    figure.suptitle(title + "\nCWD: softmax over positions per channel, averaged over channels", fontsize=8)
    savePng(figure, path)


def ldPanel(levels, value, title, path):
    """Localisation distillation per anchor: the box-distribution KL and the teacher's anchor weight, per level.
    levels: engine.inspectmaps.ldMaps's list; value: the LD term."""
    figure = newFigure((10.0, 6.0), DPI)
    for i, level in enumerate(levels):
        H, W = level["kl"].shape
        heatmap(figure, (0.02 + i * 0.33, 0.5, 0.27, 0.36), level["kl"].numpy(),
                "{} ({}x{}): box-distribution KL".format(LEVEL_NAMES[i], H, W), cmap="magma")
        heatmap(figure, (0.02 + i * 0.33, 0.05, 0.27, 0.36), level["weight"].numpy(),
                "{}: anchor weight (teacher's best old-class score)".format(LEVEL_NAMES[i]))
    figure.suptitle(title + "\nLD = sum(weight x KL) / max(1, sum(weight)) = {:.4g}".format(value), fontsize=8)
    savePng(figure, path)


MECHANISM_TERM_COLORS = {"detection": "#4d4d4d", "detectionOld": "#f58231", "detectionNew": "#3cb44b",
                         "detectionBox": "#a9a9a9", "knowledge": "#4363d8", "response": "#e6194b"}
MECHANISM_WEIGHT_COLORS = ("#b0b0b0", "#4363d8")  # per probe: the start weights, the trained weights
REGION_NAMES = {"newObjects": "on new-class objects", "oldObjects": "on old-class objects",
                "background": "on background"}
GROUP_NAMES = {"backbone": "backbone", "neck": "neck", "classBranch": "class branch\n(2 convs)",
               "oldClassRows": "old-class rows\n(last conv)", "newClassRows": "new-class rows\n(last conv)",
               "boxBranch": "box branch"}
MECHANISM_HELP = (
    "How to read this: each bar is one training term alone. push = how much one plain SGD step on that term would\n"
    "change the mean new-class logit, per unit learning rate (first order): + raises the new-class scores, - lowers\n"
    "them. At new-class objects + is what training should do; on background + means false positives.\n"
    "'At their objects' averages the anchors the assigner makes positive for a new-class box (their own class):\n"
    "the scores that make the detections the AP counts. What lowers new-class scores there, or raises them on\n"
    "background, costs the new classes AP.\n"
    "detectionOld / detectionNew / detectionBox: the detection term's gradient through the old-class / new-class /\n"
    "box outputs only (they add up to detection). The response matches the student's OLD-class scores to the\n"
    "teacher's; it never touches the new-class rows, so any push it gives the new classes comes through the shared\n"
    "layers (backbone, neck, class branch): a cosine below 0 with detectionNew means it pulls them the other way.\n"
    "With mcfg.distilResponsePath 'head' it trains the old-class rows alone: its push is exactly 0.")


def groupedBars(axes, names, series, colors, labels, annotate=True, fmt="{:+.3g}"):
    """Bars of several series side by side per name. series: per series a list of values (None: no bar, 'n/a'
    written); colors, labels: per series."""
    count = max(1, len(series))
    width = 0.8 / count
    for k, (values, color, label) in enumerate(zip(series, colors, labels)):
        xs = np.arange(len(names)) + (k - (count - 1) / 2) * width
        heights = [0.0 if v is None else v for v in values]
        axes.bar(xs, heights, width, color=color, label=label, edgecolor="black", linewidth=0.3)
        for x, v in zip(xs, values):
            if v is None:
                axes.text(x, 0, "n/a", ha="center", va="bottom", fontsize=5.5, rotation=90)
            elif annotate:
                axes.text(x, v, fmt.format(v), ha="center", va="bottom" if v >= 0 else "top", fontsize=5.5,
                          rotation=90)
    axes.set_xticks(np.arange(len(names)))
    axes.set_xticklabels(names, fontsize=6.5)
    axes.tick_params(axis="y", labelsize=6)
    axes.axhline(0, color="black", linewidth=0.6)


def pushAxes(figure, rect, probes, key, title):
    """(a): probes' push values per term, one colour per probe."""
    axes = figure.add_axes(rect)
    terms = list(probes[0][1][key])
    groupedBars(axes, terms, [[p[key][t] for t in terms] for _, p in probes], MECHANISM_WEIGHT_COLORS,
                [label for label, _ in probes])
    axes.margins(y=0.25)
    axes.set_title(title, fontsize=8)
    axes.set_ylabel("change of the mean new-class logit\nper unit learning rate", fontsize=6.5)
    axes.legend(fontsize=6, loc="best")


def normAxes(figure, rect, label, probe):
    """(b): one probe's gradient norms per parameter group (x) and term (colour), log scale; exact zeros marked."""
    axes = figure.add_axes(rect)
    groups = list(GROUP_NAMES)
    terms = list(probe["gradientNorms"])
    width = 0.8 / len(terms)
    positive = [v for t in terms for v in probe["gradientNorms"][t].values() if v > 0]
    floor = min(positive) / 3 if positive else 1e-12
    for k, term in enumerate(terms):
        xs = np.arange(len(groups)) + (k - (len(terms) - 1) / 2) * width
        values = [probe["gradientNorms"][term][g] for g in groups]
        axes.bar(xs, [v if v > 0 else np.nan for v in values], width, color=MECHANISM_TERM_COLORS.get(term, "grey"),
                 label=term, edgecolor="black", linewidth=0.3)
        for x, v in zip(xs, values):
            if v <= 0:
                axes.text(x, floor, "0", ha="center", va="bottom", fontsize=5.5, color=MECHANISM_TERM_COLORS.get(term))
    axes.set_yscale("log")
    axes.set_xticks(np.arange(len(groups)))
    axes.set_xticklabels([GROUP_NAMES[g] for g in groups], fontsize=6)
    axes.tick_params(axis="y", labelsize=6)
    axes.set_ylim(floor, max(positive, default=1.0) * 5)
    axes.set_title("(b) how hard each term pulls on each part of the network: gradient norm\n"
                   "(log scale; '0' = the term never reaches that part) - {}".format(label), fontsize=8)
    axes.legend(fontsize=6, ncol=len(terms), loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False,
                columnspacing=0.8, handlelength=1.2)


def cosineAxes(figure, rect, probes, group, where):
    """(c): cos(term, detectionNew) over one parameter group, per term, one colour per probe."""
    axes = figure.add_axes(rect)
    terms = [t for t in probes[0][1]["cosineWithDetectionNew"] if t != "detectionNew"]
    groupedBars(axes, terms, [[p["cosineWithDetectionNew"][t][group] for t in terms] for _, p in probes],
                MECHANISM_WEIGHT_COLORS, [label for label, _ in probes], fmt="{:+.2f}")
    axes.set_ylim(-1.15, 1.15)
    axes.set_title("(c) {}: cosine of each term's gradient with detectionNew's\n(+1: pulls the way learning the "
                   "new classes does, -1: against; n/a: no gradient there)".format(where), fontsize=8)
    axes.legend(fontsize=6, loc="lower left")


def scoreAxes(figure, rect, probes):
    """(d): the teacher's and the student's best old-class score per region."""
    axes = figure.add_axes(rect)
    regions = list(REGION_NAMES)
    series = [[probes[-1][1]["oldClassScores"]["teacher"][r] for r in regions]]
    series += [[p["oldClassScores"]["student"][r] for r in regions] for _, p in probes]
    labels = ["teacher"] + ["student, {}".format(label) for label, _ in probes]
    groupedBars(axes, [REGION_NAMES[r] for r in regions], series, ("#911eb4",) + MECHANISM_WEIGHT_COLORS, labels,
                fmt="{:.3g}")
    highest = max([v for values in series for v in values if v is not None], default=0.0)
    axes.set_ylim(0, min(1.15, max(0.05, 1.3 * highest)))
    axes.set_ylabel("mean best old-class score (sigmoid, 0..1)", fontsize=6.5)
    axes.set_title("(d) best OLD-class score per anchor: what the response asks the student to copy\n"
                   "(high on new-class objects = the teacher calls them an old class)", fontsize=8)
    axes.legend(fontsize=6, loc="upper right")


def mechanismPanel(probes, title, path):
    """Why the distillation can cost the new classes, in one figure: (a) each term's push on the new-class scores at
    their objects and on background, (b) gradient norms per parameter group and term, (c) cosines with detectionNew,
    (d) the teacher's and student's old-class scores per region.

    probes: [(label, train.distilprobe.probeDistillation dict)], the start weights first (one or two)."""
    figure = newFigure((12.0, 15.0), DPI)
    pushAxes(figure, (0.07, 0.77, 0.40, 0.16), probes, "pushObjects",
             "(a) push on NEW-class scores at their objects (+ raises: helps learn them)")
    pushAxes(figure, (0.57, 0.77, 0.40, 0.16), probes, "pushBackground",
             "(a) push on NEW-class scores on background (+ raises: false positives)")
    width = 0.92 / len(probes)
    for k, (label, probe) in enumerate(probes):
        normAxes(figure, (0.07 + k * width, 0.52, width - 0.08, 0.17), label, probe)
    cosineAxes(figure, (0.07, 0.28, 0.40, 0.15), probes, "classBranch", "class branch (first two convs)")
    cosineAxes(figure, (0.57, 0.28, 0.40, 0.15), probes, "features", "backbone + neck (shared features)")
    scoreAxes(figure, (0.07, 0.04, 0.40, 0.15), probes)
    first = probes[0][1]
    figure.text(0.51, 0.20, MECHANISM_HELP, fontsize=6.2, va="top", family="monospace")
    figure.text(0.51, 0.05, "summed over {} images in {} batches; old classes {}, new classes {}".format(
        first["images"], first["batches"], first["oldClasses"], first["newClasses"]), fontsize=6.5)
    figure.suptitle(title, fontsize=10)
    savePng(figure, path)
