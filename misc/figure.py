"""matplotlib figures without pyplot's global state; matplotlib is imported when a figure is drawn, not at start-up."""


def newFigure(size, dpi=100):
    """A matplotlib Figure of size (width, height) inches on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(figure)
    return figure
