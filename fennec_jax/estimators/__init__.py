"""Transferability estimators (LogME, LEEP, SFDA, ...) batched over models."""
