"""A chat reply while a worker writes it: its text so far in the cache, the flag that stops it, and the
server-sent events that carry it to the page or a program.

The worker writes the whole text so far under the message's key (a reply is a few kilobytes at
most); readers poll the key. Neither side needs the database while the reply streams, so a request
that streams holds no database connection, and any web process can serve any reply.
"""

import json
import time

from django.conf import settings
from django.core.cache import cache
from django.db import connections

KEEP_SECONDS = 3600  # a reply's stream outlives any reader; the stored message is the record
FINAL = ("done", "stopped", "failed")
ENDED = ("text", "state", "finish_reason", "error", "model_version")  # what the `end` event says


class ReplyStream:
    """The stream of a reply the model writes: a chat's message, or a suggestion for a demonstration's turn."""

    def __init__(self, reply):
        # The creation time keeps a key unique when a database reuses ids (a restored backup, a test database).
        self.key = f"{reply._meta.model_name}:{reply.pk}:{reply.created_at.timestamp():.6f}"

    def write(self, text, state="streaming", **outcome):
        cache.set(self.key, {"text": text, "state": state, "at": time.time(), **outcome}, timeout=KEEP_SECONDS)

    def read(self):
        return cache.get(self.key)

    def ask_stop(self):
        cache.set(f"{self.key}:stop", True, timeout=KEEP_SECONDS)

    def stop_asked(self):
        return bool(cache.get(f"{self.key}:stop"))


class OpenStreams:
    """The streams a person has open, counted in the cache, up to CHAT_STREAMS_PER_USER."""

    def __init__(self, user):
        self.key = f"open-streams:{user.pk}"

    def take(self):
        cache.add(self.key, 0, timeout=settings.CHAT_STREAM_SECONDS + 60)  # outlives a stream; a leak expires
        if cache.incr(self.key) > settings.CHAT_STREAMS_PER_USER:
            cache.decr(self.key)
            return False
        return True

    def held_while(self, events):
        """The events, giving the stream back when they end or the client goes."""
        try:
            yield from events
        finally:
            try:
                cache.decr(self.key)
            except ValueError:  # expired meanwhile
                pass


def snapshot(reply):
    """What the database holds of a reply, in the cache's shape."""
    return {"text": reply.text, "state": reply.state, **outcome(reply)}


def outcome(reply):
    return {"finish_reason": reply.finish_reason, "error": reply.error,
            "model_version": reply.model_version.name if reply.model_version_id else None}


def event(name, data, event_id=None):
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data)}\n\n"


def reply_events(stream, stored, offset=0, *, seconds, poll=0.05, keepalive=15.0):
    """Server-sent events of a reply from character `offset` on, for at most `seconds`.

    `text` events carry each new part with the offset it starts at; their id is the offset after it,
    so a client that reconnects (EventSource does by itself, sending Last-Event-ID) goes on where it
    was. `waiting` says no worker has taken the reply yet; `end` carries the stored reply whole and
    how it ended, and is the last event. `stored` is the database's snapshot when the request came.
    """
    for connection in connections.all(initialized_only=True):  # from here on only the cache is read
        if not connection.in_atomic_block:
            connection.close()
    deadline, beat = time.monotonic() + seconds, time.monotonic()
    sent, waiting = max(0, offset), False
    yield "retry: 1000\n\n"
    while True:
        state = stored if stored["state"] in FINAL else (stream.read() or stored)
        text = state["text"]
        if len(text) > sent and state["state"] not in FINAL:
            yield event("text", {"offset": sent, "text": text[sent:]}, len(text))
            sent, beat = len(text), time.monotonic()
        if state["state"] in FINAL:
            yield event("end", {name: state[name] for name in ENDED}, len(text))
            return
        if state["state"] == "pending" and not waiting:
            waiting = True
            yield event("waiting", {"message": "Waiting for the model to start."})
        now = time.monotonic()
        if now >= deadline:
            return  # the client reconnects from the last id
        if now - beat >= keepalive:
            beat = now
            yield ": still writing\n\n"
        time.sleep(poll)
