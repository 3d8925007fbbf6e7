"""The HTTP service (`hybrid-rerank serve`): search and rerank APIs, async jobs, probes, metrics and the
search page, over the same pipeline the CLI uses."""
