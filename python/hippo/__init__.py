"""Hippo: long-term memory for LLM agents.

Two ways in, one API:

* :class:`Memory` opens a store file in this process (no server needed)::

      from hippo import Memory
      m = Memory("memory.db")
      m.add("Ana moved to Lisbon in March", user_id="ana", kind="fact")
      m.search("Where does Ana live?", user_id="ana")

* :class:`Client` talks to a running ``hippo serve``::

      from hippo import Client
      c = Client("http://127.0.0.1:8080", api_key="hk_...")
      c.search("Where does Ana live?", user_id="ana")

Both return the REST API's JSON answers as dicts (see ``/openapi.json``)
and raise :class:`HippoError` subclasses on errors.
"""

from ._api import (
    Client,
    Conflict,
    Forbidden,
    HippoError,
    InvalidInput,
    Memory,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "Client",
    "Conflict",
    "Forbidden",
    "HippoError",
    "InvalidInput",
    "Memory",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "Unauthorized",
    "Unavailable",
]
