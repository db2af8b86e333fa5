-- customer.get-details: a small in-memory customer table behind customer.get.
local service = require "portico.service"

local M = service.new {
  name   = "customer.get-details",
  input  = { customer_id = "integer", tenant = "string?" },
  output = { customer_id = "integer", name = "string", email = "string", tier = "string" },
}

local customers = {
  [123] = { name = "John Doe", email = "john.doe@example.com", tier = "gold" },
  [456] = { name = "Jane Roe", email = "jane.roe@example.com", tier = "silver" },
}

function M:handle()
  local id = self.request.input.customer_id
  local c = customers[id]
  if not c then
    self:error(404, "customer " .. id .. " not found")
  end
  self.response.payload = { customer_id = id, name = c.name, email = c.email, tier = c.tier }
end

return M
