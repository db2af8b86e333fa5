-- demo.bus: the answering end of the WASP example's bus (config/wasp.yaml):
-- an AMQP channel runs it for each message that /bus/foo/... published to
-- exchange foo, and its answer is the reply the HTTP caller gets.
local service = require "portico.service"

local M = service.new { name = "demo.bus" }

function M:handle()
  local amqp = self.request.amqp or {}
  local headers = amqp.headers or {}
  self.response.payload = {
    answered_by = "demo.bus",
    exchange    = amqp.exchange,
    routing_key = amqp.routing_key,
    method      = headers["X-WASP-METHOD"],
    query       = headers["X-WASP-QS"],
    payload     = self.request.payload,
  }
end

return M
