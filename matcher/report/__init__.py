"""Results of a trained sweep: reading run folders, data-efficiency comparison, tables and plots.
Imports run/ (the run-folder readers), eval/ (intervals), plan/ (sweep roles and predicted costs) and the
top level."""
