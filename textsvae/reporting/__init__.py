"""From results to papers' shapes: tables, published rows, gaps, paired comparisons, plots and the HTML page."""
