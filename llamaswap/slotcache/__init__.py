"""Slot cache: keep a llama-server model's prompt (KV) cache across swaps.

Before a ``slotCache`` model is stopped, every slot that holds tokens is saved to disk over
llama-server's slot API; when the model starts again the slots are restored before it is
marked ready, so the first request after a swap back reuses the cache instead of paying the
whole prefill again. See ``docs/slot-cache.md``.

- ``config``: the ``slotCache`` settings (top level and per model) and ``${SLOT_CACHE_DIR}``.
- ``policy``: pure decisions: fingerprints, which slots to save, what to evict.
- ``store``: the files of one model's cache (slot files and a manifest).
- ``client``: llama-server's ``/props``, ``/slots`` and slot save/restore over HTTP.
- ``manager``: the mechanism that hooks into a model's start and stop.
"""
