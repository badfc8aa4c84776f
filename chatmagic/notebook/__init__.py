"""The IPython layer: %%chatmany and its friends, cell parsing, templates, the stored value, dry run."""
