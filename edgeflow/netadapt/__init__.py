"""NetAdapt latency-guided search (see edgeflow.netadapt.loop); submodules are imported where used."""
