-- demo.echo: answers with what it received, to see what a service is given.
local service = require "portico.service"

local M = service.new { name = "demo.echo" }

function M:handle()
  local http = self.request.http
  self.response.payload = {
    payload  = self.request.payload,
    username = self.channel.security.username,
    channel  = { name = self.channel.name, type = self.channel.type },
    method   = http.method,
    path     = http.path,
    query    = http.query,
    headers  = http.headers,
    cid      = self.cid,
  }
end

return M
