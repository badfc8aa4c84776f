"""The only aiohttp user: one request in, one answer or one classified error out; size caps and proxies."""
