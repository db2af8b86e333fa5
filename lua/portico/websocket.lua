-- portico.websocket: self.out.websocket, server push to WebSocket clients.
--
--   self.out.websocket:send(channel, username_or_nil, data)
--
-- Sends data (a table is sent as JSON, a string as it is) as a text message
-- to every socket of the WebSocket channel named channel, on every worker, or
-- only to username's sockets. Returns true once it is handed to the workers;
-- sockets that close meanwhile simply miss it. A socket that does not keep up
-- (its backlog would pass the channel's max_output) is closed with 1008 and
-- counted in portico_ws_slow_consumers_total: a push never buffers without end.
-- With a cluster: section the push reaches the sockets of every node
-- (docs/cluster-push.md); a message over 1 MiB is refused then: nil, err, and
-- no socket gets it.
-- A text message is UTF-8 (RFC 6455 5.6): data that is not (a string, or a
-- table holding such a string) is a mistake raised at the caller.
--
-- websocket.new(ctx[, transport]) makes the self.out.websocket of one
-- request. The transport is what reaches the workers, by default the host's
-- primitive; portico.testing passes its own, so a spec runs the checks above
-- exactly as the gateway does:
--   transport.push(channel, username_or_nil, text, data)  text: what the
--     sockets get; data: the call's own (for a transport that records pushes;
--     the host's takes only the first three)
local cjson = require "cjson"
local json = require "portico.json"

local has_host, host = pcall(require, "portico.host")
if not has_host or type(host) ~= "table" then host = nil end

-- The host's primitive as a transport, or nil outside the host (it takes
-- only the first three arguments).
local HOST
if host and host.ws_push then
  local ws_push = host.ws_push
  HOST = { push = function(channel, username, text) return ws_push(channel, username, text) end }
  -- ws_push -> count, or nil, kind, detail (a cluster push over 1 MiB)
end

local M = {}
local Push = {}
Push.__index = Push

function M.new(ctx, transport)
  return setmetatable({ ctx = ctx, transport = transport or HOST }, Push)
end

function Push:send(channel, username, data)
  if getmetatable(self) ~= Push then
    error("call it as self.out.websocket:send(...), with a colon", 2)
  end
  if type(channel) ~= "string" or channel == "" then
    error("websocket:send: channel must be the name of a WebSocket channel", 2)
  end
  if username ~= nil and type(username) ~= "string" then
    error("websocket:send: username must be a string or nil", 2)
  end
  local text
  if type(data) == "table" then
    local ok, encoded = pcall(cjson.encode, data)
    if not ok then error("websocket:send: data cannot be sent as JSON: " .. tostring(encoded), 2) end
    text = encoded
  elseif type(data) == "string" then
    text = data
  else
    error("websocket:send: data must be a table or a string, got " .. type(data), 2)
  end
  local bad = json.utf8_bad(text)
  if bad then
    error("websocket:send: data is not valid UTF-8 (byte " .. bad .. "); a text message must be", 2)
  end
  local transport = self.transport
  if not transport then
    return nil, "WebSocket push is not available outside the portico host"
  end
  local ok, kind, detail = transport.push(channel, username, text, data)
  if ok == nil and kind ~= nil then
    return nil, "websocket:send: " .. tostring(detail or kind)
  end
  return true
end

return M
