"""Slot cache: keep a llama-server model's prompt (KV) cache across swaps.

Before a ``slotCache`` model is stopped (and in the background once it is idle), every slot
that holds tokens and changed since its last save is saved to disk over llama-server's slot
API; when the model starts again the slots are restored before it is
marked ready, so the first request after a swap back reuses the cache instead of paying the
whole prefill again. See ``docs/slot-cache.md``.

- ``config``: the ``slotCache`` settings (top level and per model) and ``${SLOT_CACHE_DIR}``.
- ``policy``: pure decisions: fingerprints, which slots to save (or are current), when an
  idle model is saved, what to evict.
- ``store``: the files of one model's cache (slot files and a manifest).
- ``client``: llama-server's ``/props``, ``/slots`` and slot save/restore over HTTP.
- ``prefetch``: reading slot files into the page cache while a model loads.
- ``launch``: one run of a model as the manager tracks it.
- ``manager``: the mechanism that hooks into a model's start and stop.
"""
