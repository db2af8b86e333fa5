-- bench.push: the push of bench/run's fanout scenario. The body
-- {"seq": .., "user": "u0"?, "pad": ..} goes as a text message to every
-- socket of the bench.ws channel, or to that user's sockets only (the user
-- name each socket authenticated with). The Node reference,
-- bench/ws-fanout/server.js, does the same with npm's ws.
local service = require "portico.service"

local M = service.new { name = "bench.push" }

function M:handle()
  local raw = self.request.raw
  local user = self.request.payload and self.request.payload.user
  self.out.websocket:send("bench.ws", user, raw)
  self.response.payload = { ok = true }
end

return M
