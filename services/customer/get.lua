-- customer.get: DESIGN.md's example service, as it is there: the caller's
-- customer, looked up through customer.get-details.
local service = require "portico.service"

local M = service.new {
  name   = "customer.get",
  input  = { customer_id = "integer" },            -- checked before handle()
  output = { name = "string", email = "string", tier = "string" },
}

function M:handle()
  local username = self.channel.security.username   -- the authenticated caller
  self.logger:info("API call from %s", username)
  local id       = self.request.input.customer_id   -- parsed and checked input
  local tenant   = self.request.http.headers["x-portico-tenant"] or ""
  local customer = self:invoke("customer.get-details", { customer_id = id, tenant = tenant })
  self.response.payload = { name = customer.name, email = customer.email, tier = customer.tier }
end

return M
