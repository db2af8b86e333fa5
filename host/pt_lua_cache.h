/* pt_lua_cache: the cache primitives of portico.host, under the Lua module
 * lua/portico/cache.lua (self.cache, self.caches[name]). Each reaches the
 * cache called name in the set of the generation the worker serves now
 * (pt_cache.h). The in-process backend answers at once; a waiting one
 * (backend: redis, pt_cache_redis.h) yields the request's own coroutine
 * through the yield protocol until its answer comes, holding a reference to
 * that generation meanwhile (a reload during the wait frees nothing the call
 * uses). Outside a request's own coroutine such a cache fails "context".
 *
 *   host.cache_get(name, key) -> value, is_json | nil (a miss)
 *   host.cache_set(name, key, value, is_json, ttl, add) -> true | false (add: the key is there)
 *   host.cache_incr(name, key, by, ttl) -> the new number
 *   host.cache_delete(name, key) -> whether it was there
 *   host.cache_expire(name, key, ttl) -> whether it was there
 *   host.cache_exists(name) -> whether the generation has a cache called name
 * value: a string (is_json: JSON text that portico.cache made), a number or
 * a boolean. ttl: seconds (a number from 0 to a year; 0 or nil: the
 * cache's). Each returns nil, kind, detail on failure, kind one of
 * "context" (not on a worker's thread), "unknown" (no cache called name),
 * "invalid" (a key of 0 or more than 1024 bytes, a bad ttl or value),
 * "too_large" (past max_bytes, or the cache's max_value), "not_number",
 * "range", "nomem", "backend" (Redis failed: detail says how), "cancelled"
 * (a wait cut short by a drain or the run's time-out). portico.cache raises for the
 * first four and for not_number; the rest are runtime failures. */
#ifndef PT_LUA_CACHE_H
#define PT_LUA_CACHE_H

#include <lua.h>

/* Adds the primitives to the table on top of L's stack (portico.host); a
 * pt_lua_register_fn of pt_primitives. */
void pt_lua_cache_register(lua_State *L);

#endif
