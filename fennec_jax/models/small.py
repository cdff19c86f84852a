"""Small architectures of the offline zoo (MLP, plain CNN, MLP-Mixer); filled in by the offline-benchmark work."""
