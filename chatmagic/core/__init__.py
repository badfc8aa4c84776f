"""The run: concurrency, retries, pacing, the answer cache, the timeline and the loop bridge. No IPython here."""
