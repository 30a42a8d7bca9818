"""The study's tables and appendix figures, from the metric CSVs and the training histories."""
