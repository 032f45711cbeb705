"""Reports to text and files: Rich tables (the only Rich imports), JSON, heatmaps, plots
(matplotlib), .npy/.npz writers, progress lines; `emit` picks a report type's formatter.

May import: rich, matplotlib, numpy, commands/ (their report records), model/, errors.
"""
