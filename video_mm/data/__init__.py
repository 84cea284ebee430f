"""Caption datasets (loaders, the synthetic benchmark) and the vocabulary."""
