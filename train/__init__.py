"""unim2_train: command-line entry points for offline data preparation, training and evaluation."""
