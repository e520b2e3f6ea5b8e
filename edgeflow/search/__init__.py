"""NetAdapt latency-guided search (see edgeflow.search.netadapt); submodules are imported where used."""
