-- The nginx + lua-nginx-module side of bench/run: the same per-request work as
-- portico's bench.json service (bench/services/bench/json.lua) and, for the
-- auth scenario, a per-request basic-auth check comparable to portico's
-- cached one (a verified Authorization value is remembered in a Lua table;
-- a miss decodes the header and checks a salted hash held in a table).
local cjson = require "cjson"
local cjson_safe = require "cjson.safe"

local encode, decode = cjson.encode, cjson_safe.decode
local ngx = ngx
local var, req, header = ngx.var, ngx.req, ngx.header

local M = {}

local function send(status, body)
  ngx.status = status
  header["Content-Type"] = "application/json"
  header["Content-Length"] = #body     -- no chunked encoding, as portico
  ngx.print(body)
  return ngx.exit(status)
end

-- content_by_lua_block { require("bench_nginx").json() }
function M.json()
  req.read_body()
  local body = req.get_body_data()
  local payload = body and body ~= "" and decode(body) or nil
  if body and body ~= "" and payload == nil then
    return send(400, '{"error":{"status":400,"message":"invalid JSON"}}')
  end
  return send(200, encode({
    customer_id = payload and payload.customer_id,
    tenant      = var.http_x_portico_tenant,
    ok          = true,
  }))
end

-- Users as a config would hold them: salted SHA-1 (base64), never the password.
-- bench / bench-secret is the account bench/run uses on both servers.
local users = {
  bench = { salt = "portico-bench-salt", hash = "5IRwSmJ3YnzErgpT4OKparaxYjU=" },
}
local verified = {}   -- Authorization header value -> user name (only successes)

local function deny()
  header["WWW-Authenticate"] = 'Basic realm="portico-bench"'
  return send(401, '{"error":{"status":401,"message":"unauthorized"}}')
end

-- access_by_lua_block { require("bench_nginx").basic_auth() }
function M.basic_auth()
  local h = var.http_authorization
  if not h then return deny() end
  local user = verified[h]
  if user then
    ngx.ctx.username = user
    return
  end
  if h:sub(1, 6):lower() ~= "basic " then return deny() end
  local decoded = ngx.decode_base64(h:sub(7))
  local name, password = (decoded or ""):match("^([^:]*):(.*)$")
  local u = name and users[name]
  if not u or ngx.encode_base64(ngx.sha1_bin(u.salt .. password)) ~= u.hash then
    return deny()
  end
  verified[h] = name
  ngx.ctx.username = name
end

-- The rate-limited scenario: a leaky bucket on a lua_shared_dict, as
-- resty.limit.req (lua-resty-limit-traffic, the OpenResty norm) keeps it:
-- one dict:get, the leak since the last request, one dict:set of the record
-- (excess and last time packed in a C struct through the FFI). Written here
-- because Debian ships no lua-resty-limit-traffic; same algorithm, same
-- per-request work. The limit is high enough never to refuse (as portico's).
local ffi = require "ffi"
ffi.cdef [[ struct bench_limit_rec { unsigned long excess; uint64_t last; }; ]]
local rec_ptr = ffi.typeof("const struct bench_limit_rec *")
local rec_size = ffi.sizeof("struct bench_limit_rec")
local rec = ffi.new("struct bench_limit_rec")
local ffi_str, ffi_cast = ffi.string, ffi.cast
local dict = ngx.shared.bench_limit
local RATE, BURST = 1000000 * 1000, 1000000 * 1000  -- requests/s and burst, x1000 as resty does
local now = ngx.now

-- access_by_lua_block { require("bench_nginx").limit() }
function M.limit()
  local t = now() * 1000
  local excess = 0
  local v = dict and dict:get("bench.rl")
  if v then
    local r = ffi_cast(rec_ptr, v)
    local elapsed = t - tonumber(r.last)
    excess = tonumber(r.excess) - RATE * math.abs(elapsed) / 1000 + 1000
    if excess < 0 then excess = 0 end
    if excess > BURST then
      header["Retry-After"] = "1"
      return send(429, '{"error":{"status":429,"message":"rate limit exceeded"}}')
    end
  end
  rec.excess = excess
  rec.last = t
  dict:set("bench.rl", ffi_str(rec, rec_size))
end

return M
