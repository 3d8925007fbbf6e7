"""Celery's Redis result backend with one round trip per stored state instead of two.

Celery stores a task state with a GET (to never overwrite a SUCCESS, should a redelivered copy of a finished
task run again) and then a SET and PUBLISH. A rerank task stores two states (STARTED, then its result), and
each round trip on its way is a wake-up of Redis and of the worker process: on a loaded 2-core machine a few
milliseconds each. Here the same check and write run in Redis as one script (`STORE_SCRIPT`), so a state
costs one round trip and keeps Celery's rule. Everything else, the keys, the encoding, the pub/sub that wakes
a waiting client and the expiry, is Celery's own.
"""

from __future__ import annotations

from typing import Any

from celery import states
from celery.backends.redis import RedisBackend

# KEYS[1]: the task's result key; ARGV[1]: the encoded meta; ARGV[2]: seconds to keep it (0: no expiry).
# A stored SUCCESS is final, as in Celery's `BaseKeyValueStoreBackend._store_result`.
STORE_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current then
    local ok, meta = pcall(cjson.decode, current)
    if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then
        return 0
    end
end
if tonumber(ARGV[2]) > 0 then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
    redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""
BACKEND_NAME = "hybrid_rerank.workers.result_backend:OneTripRedisBackend"


def backend_url(redis_url: str) -> str:
    """Celery's `result_backend` for this backend on `redis_url` (Celery's `class+url` form)."""
    return f"{BACKEND_NAME}+{redis_url}"


class OneTripRedisBackend(RedisBackend):  # type: ignore[misc]
    """`RedisBackend` whose `_store_result` is one script call (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._store = self.client.register_script(STORE_SCRIPT)

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = _text(task_id)
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            from celery.exceptions import BackendStoreError

            raise BackendStoreError("value too large for Redis backend", state=state, task_id=task_id)
        expires = self.failure_expires if state == states.FAILURE else self.expires
        key = _text(self.get_key_for_task(task_id))
        self.ensure(self._run_store, (key, value, int(expires or 0)))
        return result

    def _run_store(self, key: str, value: Any, expires_s: int) -> None:
        self._store(keys=[key], args=[value, expires_s])


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
