"""Data stages: sources → conversations → tasks/templates → mixtures → tokenize+mask → pack."""
