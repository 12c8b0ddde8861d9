"""Class colours, in one place for the GUI timeline, the figures and the case report.

Conventional emotion colours (anger red, happiness orange-yellow, sadness blue, …) so a reader can tell
the curves apart without the legend; any other class gets a colour from a qualitative palette by index.
Plain hex strings: no Qt, no matplotlib, so every layer can import it.
"""

from __future__ import annotations

CLASS_COLOURS = {
    "angry": "#d62728", "anger": "#d62728", "disgust": "#2ca02c", "fear": "#9467bd",
    "happy": "#ff9f1c", "happiness": "#ff9f1c", "neutral": "#7f7f7f", "sad": "#1f77b4",
    "sadness": "#1f77b4", "surprise": "#17becf", "contempt": "#8c564b",
}
FALLBACK = ["#e377c2", "#bcbd22", "#8c564b", "#17becf", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]


def class_hex(name: str, index: int) -> str:
    """The colour of class `name` (its position `index` among the model's classes picks the fallback)."""
    return CLASS_COLOURS.get(name.lower(), FALLBACK[index % len(FALLBACK)])
