"""Adapters for retrieval frameworks. Each lives in its own module and imports its framework
only when that module is imported, so ``import srvdb`` never loads LangChain or LlamaIndex:

- :mod:`srvdb.integrations.langchain`: ``SrvDBVectorStore``, a LangChain ``VectorStore``
  (``pip install "langchain-core>=1.0,<2"``);
- :mod:`srvdb.integrations.llama_index`: ``SrvDBVectorStore``, a LlamaIndex
  ``BasePydanticVectorStore`` (``pip install "llama-index-core>=0.14,<0.15"``).
"""
