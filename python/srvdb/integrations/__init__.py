"""Adapters for retrieval frameworks. Each lives in its own module and imports its framework
only when that module is imported, so ``import srvdb`` never loads LangChain or LlamaIndex:

- :mod:`srvdb.integrations.langchain`: ``SrvDBVectorStore``, a LangChain ``VectorStore``
  (``pip install "srvdb[langchain]"``);
- :mod:`srvdb.integrations.llama_index`: ``SrvDBVectorStore``, a LlamaIndex
  ``BasePydanticVectorStore`` (``pip install "srvdb[llamaindex]"``).
"""
