-- portico.testing: call a service from busted with no host.
--
--   local testing = require "portico.testing"
--   local t = testing.new()                         -- an isolated registry
--   t:load("services/customer/get.lua")             -- -> "customer.get"
--   t:stub("customer.get-details", function(input, self) return { name = "x", ... } end)
--   local res = t:call("customer.get", {
--     payload  = { customer_id = 123 },             -- or body = '{"customer_id": 123}'
--     headers  = { ["x-portico-tenant"] = "acme" }, -- lower-case names
--     username = "john.doe",
--     channel  = { name = "api", type = "rest" },   -- the default is this one
--     method = "POST", path = "/api/customer/get", query = "a=1",
--   })
--   res.status, res.payload (decoded JSON), res.body, res.content_type,
--   res.headers, res.error (the message of a JSON error body)
--   t.invocations   -- { {name=, input=}, ... } every self:invoke
--   t.logs          -- { {level=, message=, cid=, service=}, ... }
--   t.sent.amqp     -- { {data=, outconn=, exchange=, routing_key=, props=}, ... }
--   t:amqp_fails("connection lost")   -- later sends return nil, "connection lost"
--
-- Calls go through the same runtime.dispatch the host calls, so input and
-- output schemas, JSON decoding and error bodies behave as in the gateway.
local cjson = require "cjson"

local M = {}

local Harness = {}
Harness.__index = Harness

-- A fresh copy of the runtime, so each harness has its own registry.
local function fresh_runtime()
  local saved = package.loaded["portico.runtime"]
  package.loaded["portico.runtime"] = nil
  local rt = require "portico.runtime"
  package.loaded["portico.runtime"] = saved
  return rt
end

function M.new()
  local t = setmetatable({
    runtime = fresh_runtime(),
    invocations = {},
    logs = {},
    sent = { amqp = {} },
    stubs = {},
    amqp_error = nil,
    counter = 0,
  }, Harness)
  local rt = t.runtime
  rt.log = function(level, message, cid, service)
    t.logs[#t.logs + 1] = { level = level, message = message, cid = cid, service = service }
  end
  rt.stubs = t.stubs
  rt.on_invoke = function(name, input)
    t.invocations[#t.invocations + 1] = { name = name, input = input }
  end
  -- self.out.amqp records instead of publishing.
  local fake_amqp = {}
  fake_amqp.__index = fake_amqp
  function fake_amqp:send(data, outconn, exchange, routing_key, props)
    if type(data) ~= "table" and type(data) ~= "string" then
      error("amqp:send: data must be a table or a string, got " .. type(data), 2)
    end
    t.sent.amqp[#t.sent.amqp + 1] = {
      data = data, outconn = outconn, exchange = exchange, routing_key = routing_key, props = props,
    }
    if t.amqp_error then return nil, t.amqp_error end
    return true
  end
  rt.out_modules = setmetatable({ amqp = { new = function() return setmetatable({}, fake_amqp) end } },
    { __index = rt.out_modules })
  return t
end

-- Loads a service file; returns its name. Raises the load error as is.
function Harness:load(path)
  return self.runtime.load(path)
end

-- Makes self:invoke(name, ...) call fn(input, self) instead of the service.
function Harness:stub(name, fn)
  self.stubs[name] = fn
end

-- Later self.out.amqp:send calls return nil, err (nil: succeed again).
function Harness:amqp_fails(err)
  self.amqp_error = err
end

function Harness:call(name, req)
  req = req or {}
  self.counter = self.counter + 1
  local body = req.body
  if body == nil and req.payload ~= nil then body = cjson.encode(req.payload) end
  if body == nil and req.input ~= nil then body = cjson.encode(req.input) end
  local channel = req.channel or {}
  local status, rbody, ctype, headers = self.runtime.dispatch(
    name, req.cid or ("test-cid-" .. self.counter), req.method or "POST", req.path or "/test",
    req.query or "", req.headers or {}, body or "", channel.name or "test",
    channel.type or "rest", req.username, req.params, req.gateway, req.amqp)
  local res = { status = status, body = rbody, content_type = ctype, headers = headers or {} }
  if ctype == "application/json" and rbody ~= "" then
    res.payload = cjson.decode(rbody)
    if type(res.payload) == "table" and type(res.payload.error) == "table" and status >= 400 then
      res.error = res.payload.error.message
    end
  end
  return res
end

return M
