"""Task data: sources, class-balanced probe sampling, offline task suite."""
