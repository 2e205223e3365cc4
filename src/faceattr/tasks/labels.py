"""Label conventions shared by tasks, datasets and losses."""

MISSING = -1  # a label the sample does not have (another dataset's task, or an unreadable field)
