"""The tiny llama GGUF the tests use: written by ``actorao.examples.tiny_llama`` (bench writes it too)."""

from actorao.examples.tiny_llama import write_tiny_llama

__all__ = ["write_tiny_llama"]
