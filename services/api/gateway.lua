--- api.gateway: accepts a JSON document over REST and hands it to the
-- backend through AMQP (config/api-gateway.yaml, docs/amqp.md).
--
-- It adds _receiver (this service's name), _correlation_id (the request's
-- cid) and _date_received (UTC, ISO-8601) to the document, publishes it
-- through the outgoing connection "My Backend" to the exchange /incoming with
-- routing key "api", and answers {"result": "OK, data accepted"} once the
-- broker has confirmed it. When the broker cannot take it, the answer is 503.

local service = require "portico.service"

local M = service.new {
  name = "api.gateway",
}

local OUTCONN, EXCHANGE, ROUTING_KEY = "My Backend", "/incoming", "api"

local function iso8601_utc(t)
  t = tostring(t)
  if t:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d[%.%d]*$") then
    return t .. "Z"
  end
  return t
end

function M:handle()
  local doc = self.request.payload
  if type(doc) ~= "table" or doc[1] ~= nil then
    self.response.status = 400
    self.response.payload = {
      error = { status = 400, message = "expected a JSON object", cid = self.cid },
    }
    return
  end
  doc._receiver = self.name
  doc._correlation_id = self.cid
  doc._date_received = iso8601_utc(self.time)

  local ok, err = self.out.amqp:send(doc, OUTCONN, EXCHANGE, ROUTING_KEY)
  if not ok then
    self.logger:warn("not accepted, the backend is unavailable: %s", err)
    self.response.status = 503
    self.response.payload = {
      error = { status = 503, message = "the backend is unavailable, try again later",
                cid = self.cid },
    }
    return
  end
  self.response.payload = { result = "OK, data accepted" }
end

return M
