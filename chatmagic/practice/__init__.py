"""Servers to practise on without an API key: the fake OpenAI server (``python -m chatmagic.practice``)
and the local model (``chatmagic-local``)."""
