"""Looking inside models and runs: summaries, conv arithmetic, plots. Data first, drawing after."""

from convkit.inspect.summary import LayerRow, Summary, format_summary, print_summary, summarize

__all__ = ["LayerRow", "Summary", "format_summary", "print_summary", "summarize"]
