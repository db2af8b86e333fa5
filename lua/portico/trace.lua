-- portico.trace: self.trace, a service's part of the request's trace
-- (docs/tracing.md).
--
--   self.trace:set(key, value)     an attribute of the service's span
--                                  (value a string, number or boolean)
--   self.trace:error(message)      the span's status is an error
--   local s = self.trace:span(name) a child span, started now; s has the
--   s:set(k, v) ... s:finish()      same methods; finish() ends and exports it
--   self.trace:traceparent()       the W3C traceparent naming this span as
--                                  the parent (nil when not traced)
--   self.trace.trace_id            32 hex digits (nil when not traced)
--   self.trace:tracestate()        the tracestate that came with the trace
--                                  (passed on with every call out; nil: none)
--
-- The service's span is a child of the gateway's server span, made on the
-- first use of self.trace (only then is the request's context asked of the
-- host: portico.host.trace_parent) and finished when the handler returns; calls
-- through self.out.http and self.out.amqp and self:invoke make child spans
-- of it and carry its context on. When tracing is off (or the request is
-- not traced) self.trace is one shared no-op object: no table, no string is
-- made per request.
local has_host, host = pcall(require, "portico.host")
if not has_host or type(host) ~= "table" then host = nil end

local type, tostring, setmetatable, error = type, tostring, setmetatable, error
local sub = string.sub

local new_id = host and host.trace_id
local now = host and host.trace_now
local emit = host and host.trace_emit
local parent = host and host.trace_parent

local M = {}

local KINDS = { internal = 1, server = 2, client = 3, producer = 4, consumer = 5 }

-- ---- the no-op ----

local Noop = {}
Noop.__index = Noop
local NOOP = setmetatable({}, Noop)
function Noop.set(s) return s end
function Noop.error(s) return s end
function Noop.span() return NOOP end
function Noop.finish() end
function Noop.traceparent() return nil end
function Noop.tracestate() return nil end
M.NOOP = NOOP

-- ---- a span ----

local Span = {}
Span.__index = Span

local function check_kv(key, value)
  if type(key) ~= "string" or key == "" then error("trace:set: key must be a non-empty string", 3) end
  local t = type(value)
  if t ~= "string" and t ~= "number" and t ~= "boolean" then
    error("trace:set: value must be a string, a number or a boolean, got " .. t, 3)
  end
end

function Span:set(key, value)
  check_kv(key, value)
  local a = self.attrs
  if not a then a = {}; self.attrs = a end
  a[key] = value
  return self
end

function Span:error(message)
  self.err = tostring(message)
  return self
end

local function make(trace_id, parent_id, flags, name, kind, state)
  return setmetatable({
    trace_id = trace_id, span_id = new_id(8), parent_id = parent_id, flags = flags,
    name = name, kind = kind, start = now(), attrs = nil, err = nil, done = false,
    state = state,
  }, Span)
end

function Span:span(name, kind)
  if type(name) ~= "string" or name == "" then error("trace:span: name must be a non-empty string", 2) end
  local k = 1
  if kind ~= nil then
    k = KINDS[kind]
    if not k then error("trace:span: kind must be internal, server, client, producer or consumer", 2) end
  end
  return make(self.trace_id, self.span_id, self.flags, name, k, self.state)
end

function Span:traceparent()
  return "00-" .. self.trace_id .. "-" .. self.span_id .. "-" .. self.flags
end

-- The tracestate that came with the trace (passed on as it came), or nil.
function Span:tracestate()
  return self.state
end

function Span:finish()
  if self.done then return end
  self.done = true
  if self.flags == "01" then
    emit(self.trace_id, self.span_id, self.parent_id, self.name, self.kind, self.start, now(),
      self.attrs, self.err)
  end
end

-- The service span under the traceparent tp (made by the host: trusted to
-- be well formed) and its tracestate (nil: none), or NOOP when tp is nil or
-- the host has no tracing.
function M.new(tp, name, state)
  if tp == nil or not emit then return NOOP end
  -- "00-" trace "-" parent "-" flags; only the sampled bit is ours to pass on
  local flags = sub(tp, 54, 55) == "01" and "01" or "00"
  return make(sub(tp, 4, 35), sub(tp, 37, 52), flags, "service " .. tostring(name), 1, state)
end

-- Whether the host traces at all (tracing: on); when not, self.trace is
-- always NOOP and callers skip it.
M.on = emit ~= nil and parent ~= nil

-- The service span of the running request: the host formats the request's
-- context only now (portico.host.trace_parent), or NOOP when the request is
-- not traced.
function M.current(name)
  if not M.on then return NOOP end
  local tp, state = parent()
  return M.new(tp, name, state)
end

return M
