"""The Redis cache, keeping one client per connection pool.

Django's Redis backend builds a new `redis.Redis` for every operation, and with it the client's
table of response callbacks; the API's throttle reads and writes the cache on every request, so
that cost came twice per request. A client is safe to share between threads: it takes a
connection from its pool for each command.
"""

from django.core.cache.backends import redis


class RedisCacheClient(redis.RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class RedisCache(redis.RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = RedisCacheClient
