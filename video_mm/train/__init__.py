"""Training and evaluation: the shared loop, captioner training, metrics, attention pictures."""
