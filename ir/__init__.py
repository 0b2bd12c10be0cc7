"""ember's intermediate representations: the graph IR and its operator definitions."""
