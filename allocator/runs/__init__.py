"""The run store: run directories, manifests, hashes and their contract."""
