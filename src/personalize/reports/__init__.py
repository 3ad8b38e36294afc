"""Reports: notebook-facing tables and figures built from results (experiments, tuning
sessions), above everything that computes those results."""
