-- orders.get: one order by its id, from the path (GET /api/orders/{order_id})
-- or the query (GET /gateway/orders.get?order_id=1001). The id arrives as
-- text and the input schema makes it an integer; ?lines=false leaves the
-- lines out (docs/services.md, "Models and input").
local service = require "portico.service"
local schema = require "portico.schema"

local M = service.new {
  name   = "orders.get",
  input  = { order_id = "integer(1..)", lines = "boolean=true" },
  output = {
    order_id = "integer", customer_id = "integer", status = "string",
    lines = schema.optional { { sku = "string", qty = "integer" } },
  },
}

local orders = {
  [1001] = { customer_id = 123, status = "shipped", lines = { { sku = "A-1", qty = 2 }, { sku = "B-7", qty = 1 } } },
  [1002] = { customer_id = 456, status = "accepted", lines = { { sku = "C-3", qty = 5 } } },
}

function M:handle()
  local input = self.request.input
  local o = orders[input.order_id]
  if not o then self:error(404, "order " .. input.order_id .. " not found") end
  self.response.payload = {
    order_id = input.order_id, customer_id = o.customer_id, status = o.status,
    lines = input.lines and o.lines or nil,
  }
end

return M
