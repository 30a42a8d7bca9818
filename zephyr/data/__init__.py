"""The data side: raw sources → unified records → sampled mixtures (and held-out sets)."""
