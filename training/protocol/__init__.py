"""The evaluation protocol: spatially blocked cross-validation with a final test set no training,
early stopping or gate decision ever sees, baselines on the same folds, block-bootstrap intervals.
See docs/model-card.md for how to read its report."""
