"""The hash exchange between a data set builder and a list holder (see `format`)."""
