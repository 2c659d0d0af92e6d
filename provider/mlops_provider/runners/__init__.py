"""Where a stage's work runs when not in the task's own process (``train.runner``)."""
