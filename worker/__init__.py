"""The RQ worker: loads a model once per process and renders block jobs into the tile store."""
