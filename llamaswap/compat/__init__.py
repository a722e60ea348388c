"""llama-swap's management API shapes, as pure functions (docs/management-api.md).

llama-swap's web UI and the tools written for its API decode these JSON documents into Go or
TypeScript types, so field names and JSON types are part of the contract: an ``int`` field is
a JSON integer, a ``[]byte`` field is base64 text, a ``time.Time`` is RFC 3339 text. The
modules here turn llamaswap's own records into those documents; the HTTP layer only sends
them.
"""
