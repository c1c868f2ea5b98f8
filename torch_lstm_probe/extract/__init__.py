"""Extraction over whole datasets: data sources, the streaming loop, shards and their reader."""
