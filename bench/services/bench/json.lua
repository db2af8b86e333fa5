-- bench.json: the per-request work of the benchmark's JSON scenario.
-- The same logic runs on nginx in bench/nginx/lua/bench_nginx.lua (json()):
-- decode the JSON body, read one header, encode a JSON answer.
--   POST {"customer_id": 123, "name": "x"}  +  x-portico-tenant: acme
--   ->   {"customer_id":123,"tenant":"acme","ok":true}
-- No input schema on purpose: the nginx side does no validation either.
local service = require "portico.service"

local M = service.new { name = "bench.json" }

function M:handle()
  local payload = self.request.payload
  self.response.payload = {
    customer_id = payload and payload.customer_id,
    tenant      = self.request.http.headers["x-portico-tenant"],
    ok          = true,
  }
end

return M
