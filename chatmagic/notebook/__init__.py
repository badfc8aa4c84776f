"""The IPython layer: %%chatmany and its friends, cell parsing, templates, the stored value, plots, dry run."""
