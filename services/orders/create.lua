-- orders.create: an order with a nested model. The input schema checks the
-- whole document before handle() runs (docs/services.md, "Models and input"):
-- a shipping address, one to 100 lines, a currency from a list, and fields
-- nobody declared refused (unknown = "reject"). Nothing is stored: the answer
-- is what the order would be.
--   POST /api/orders  {"customer_id": 123, "shipping": {...}, "lines": [{"sku": "A-1", "qty": 2, "price": 9.5}]}
local service = require "portico.service"

local M = service.new {
  name = "orders.create",
  unknown = "reject",
  input = {
    customer_id = "integer(1..)",
    currency    = "enum(EUR,USD,GBP)=EUR",
    note        = "string(..500)?",
    gift        = "boolean=false",
    shipping    = {
      name    = "string(1..100)",
      street  = "string(1..200)",
      city    = "string(1..100)",
      zip     = "string(3..10)~[%w%- ]+",
      country = "string(2..2)~%u%u",                 -- ISO 3166 alpha-2
    },
    lines = { {
      sku   = "string(1..32)~[%u%d%-]+",
      qty   = "integer(1..1000)",
      price = "number(0..)",
    }, min = 1, max = 100 },
  },
  output = {
    order_id = "string", status = "enum(accepted)", customer_id = "integer",
    currency = "string", total = "number", items = "integer", gift = "boolean",
    ship_to  = { city = "string", country = "string" },
  },
}

function M:handle()
  local order = self.request.input
  local total, items = 0, 0
  for _, line in ipairs(order.lines) do
    total = total + line.qty * line.price
    items = items + line.qty
  end
  self.logger:info("order of %d items for customer %d", items, order.customer_id)
  self.response.status = 201
  self.response.payload = {
    order_id = "ord-" .. self.cid, status = "accepted", customer_id = order.customer_id,
    currency = order.currency, total = math.floor(total * 100 + 0.5) / 100, items = items,
    gift = order.gift, ship_to = { city = order.shipping.city, country = order.shipping.country },
  }
end

return M
