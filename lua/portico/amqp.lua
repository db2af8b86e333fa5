--- portico.amqp: self.out.amqp, publishing to outgoing AMQP connections.
--
--   local ok, err = self.out.amqp:send(data, outconn, exchange, routing_key[, props])
--
-- data: a table (sent as JSON, content type application/json) or a string
-- (sent as it is). outconn: the name of an outgoing.amqp connection in the
-- config. props (optional): content_type, content_encoding, headers (a table
-- of string keys and string, number or boolean values), message_id,
-- correlation_id, reply_to, expiration (milliseconds), type, app_id,
-- persistent (default true), priority, timestamp (seconds since the epoch).
--
-- With publisher confirms (the default) the call waits, without blocking the
-- worker, until the broker has the message, and returns true; it returns
-- nil, err when the broker refuses it (no such exchange, nack), returns it
-- (no queue is bound for the routing key), does not confirm in time, or the
-- connection is down (at once, without waiting). Without confirms it returns
-- true once the message is written to the socket. Mistakes in the call itself
-- (wrong types, unknown property or connection) raise an error.
--
-- amqp.new(ctx[, transport]) makes the self.out.amqp of one request. The
-- transport is what reaches the broker, by default the host's primitives
-- (docs/amqp.md); portico.testing passes its own, so a spec runs every check
-- above exactly as the gateway does:
--   transport.outconn(name) -> true when an outgoing.amqp connection has that name
--   transport.publish(outconn, exchange, routing_key, body, props, data, given)
--     -> true | nil, err. body and props (checked, content_type added for a
--     table) are what goes to the broker; data and given are the call's own
--     data and props, for a transport that records sends (the host's takes
--     only the first five).

local cjson = require "cjson"
local trace = require "portico.trace"

local has_host, host = pcall(require, "portico.host")
if not has_host or type(host) ~= "table" then
  host = nil
end

-- The host's primitives as a transport, or nil outside the host. publish
-- hands on only what the host primitive takes (it may wait: a tail call).
local HOST
if host and host.amqp_publish then
  local amqp_publish = host.amqp_publish
  HOST = {
    outconn = host.amqp_outconn,
    publish = function(outconn, exchange, routing_key, body, props)
      return amqp_publish(outconn, exchange, routing_key, body, props)
    end,
  }
end

local M = {}

local Amqp = {}
Amqp.__index = Amqp

local PROPS = {
  content_type = "string",
  content_encoding = "string",
  headers = "table",
  message_id = "string",
  correlation_id = "string",
  reply_to = "string",
  expiration = "string",
  type = "string",
  app_id = "string",
  persistent = "boolean",
  priority = "number",
  timestamp = "number",
}

local function check_props(props)
  local out = {}
  for k, v in pairs(props) do
    local want = PROPS[k]
    if not want then
      return nil, "unknown property '" .. tostring(k) .. "'"
    end
    local got = type(v)
    if want == "string" and got == "number" then
      v = tostring(v)
    elseif got ~= want then
      return nil, "property " .. k .. " must be a " .. want .. ", got " .. got
    end
    if k == "priority" and (v < 0 or v > 255 or v % 1 ~= 0) then
      return nil, "property priority must be a whole number from 0 to 255"
    end
    if k == "timestamp" and (v < 0 or v % 1 ~= 0) then
      return nil, "property timestamp must be whole seconds since the epoch"
    end
    if k == "headers" then
      for hk, hv in pairs(v) do
        local ht = type(hv)
        if type(hk) ~= "string" then
          return nil, "header names must be strings"
        end
        if ht ~= "string" and ht ~= "number" and ht ~= "boolean" then
          return nil, "header " .. hk .. " must be a string, number or boolean, got " .. ht
        end
      end
    end
    out[k] = v
  end
  return out
end

--- Creates the self.out.amqp of one request; transport: see the top.
function M.new(ctx, transport)
  return setmetatable({ ctx = ctx, transport = transport or HOST }, Amqp)
end

function Amqp:send(data, outconn, exchange, routing_key, props)
  if getmetatable(self) ~= Amqp then
    error("call it as self.out.amqp:send(...), with a colon", 2)
  end
  local body, content_type
  local t = type(data)
  if t == "table" then
    local ok, encoded = pcall(cjson.encode, data)
    if not ok then
      error("amqp:send: data cannot be sent as JSON: " .. tostring(encoded), 2)
    end
    body, content_type = encoded, "application/json"
  elseif t == "string" then
    body = data
  else
    error("amqp:send: data must be a table or a string, got " .. t, 2)
  end
  if type(outconn) ~= "string" or outconn == "" then
    error("amqp:send: outconn must be the name of an outgoing AMQP connection", 2)
  end
  if type(exchange) ~= "string" then
    error("amqp:send: exchange must be a string (\"\" is the default exchange)", 2)
  end
  if type(routing_key) ~= "string" then
    error("amqp:send: routing_key must be a string", 2)
  end
  local p
  if props ~= nil then
    if type(props) ~= "table" then
      error("amqp:send: props must be a table", 2)
    end
    local err
    p, err = check_props(props)
    if not p then
      error("amqp:send: " .. err, 2)
    end
  end
  if content_type and (p == nil or p.content_type == nil) then
    p = p or {}
    p.content_type = content_type
  end
  local transport = self.transport
  if not transport then
    return nil, "AMQP is not available outside the portico host"
  end
  if not transport.outconn(outconn) then
    error("amqp:send: no outgoing AMQP connection named '" .. outconn .. "'", 2)
  end
  local ctx = self.ctx
  local sp = trace.on and type(ctx) == "table" and ctx.trace
  if sp then sp = sp ~= trace.NOOP and sp:span("amqp publish", "producer") end
  if not sp then return transport.publish(outconn, exchange, routing_key, body, p, data, props) end
  -- traced: the message carries the producer span's context (a copy of
  -- the caller's headers: its table stays as it gave it)
  p = p or {}
  local h = {}
  if p.headers then for k, v in pairs(p.headers) do h[k] = v end end
  if h.traceparent == nil then
    h.traceparent = sp:traceparent()
    if h.tracestate == nil then h.tracestate = sp:tracestate() end
  end
  p.headers = h
  sp:set("messaging.system", "rabbitmq"):set("messaging.destination.name", exchange)
    :set("messaging.rabbitmq.destination.routing_key", routing_key):set("portico.outconn", outconn)
  local r1, r2, r3 = transport.publish(outconn, exchange, routing_key, body, p, data, props)
  if r1 == nil then sp:error(tostring(r2)) end
  sp:finish()
  return r1, r2, r3
end

return M
