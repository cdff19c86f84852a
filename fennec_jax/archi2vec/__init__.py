"""archi2vec: architecture graphs from jaxprs and their embeddings."""
