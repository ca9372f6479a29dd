"""Reports: figures, Grad-CAM, t-SNE and the HTML report of a run; run comparison."""
