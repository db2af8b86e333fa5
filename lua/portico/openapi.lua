-- portico.openapi: the OpenAPI 3.1 document of a running config
-- (docs/openapi.md is the reference).
--
--   local openapi = require "portico.openapi"
--   local doc  = openapi.build(cfg[, get])   -- a table
--   local text = openapi.encode(doc)         -- JSON, keys sorted, the same text for the same input
--   local text = openapi.document(cfg)       -- both, with this VM's services (the host calls it)
--
-- cfg describes the config as the host sees it (pt_openapi.c builds it):
--   { version = "0.1.0", servers = { "http://127.0.0.1:11223", ... },
--     channels = { { name =, type = "rest" | "gateway" | "websocket" | "http_proxy" | "amqp_bus",
--                    url_path =, methods = { "GET", ... }, service =, services = { ... },
--                    rate_limit = true | nil,
--                    security = { name =, kind = "basic_auth" | "api_key" | "jwt" | "client_cert",
--                                 header =, realm =, alg = } | nil }, ... } }
-- get(name) returns a loaded service module (default: this VM's runtime.get);
-- a channel whose service is not loaded is described without schemas.
--
-- A service's schemas come from its compiled models (portico.service.compiled):
-- nested objects, arrays, required lists (a field is required unless it is
-- optional or has a default), ranges, enums, defaults. A Lua pattern becomes a
-- JSON Schema pattern (an ECMA regex) when it uses only what both read alike
-- (literals, positive classes such as %d %u %w, positive sets, * + - ?);
-- x-lua-pattern always carries the pattern the gateway checks.
local cjson = require "cjson"
local service = require "portico.service"

local type, pairs, ipairs, tostring, sort, concat, fmt, sub, find, gsub, floor =
  type, pairs, ipairs, tostring, table.sort, table.concat, string.format, string.sub,
  string.find, string.gsub, math.floor
local next, tonumber, getmetatable, setmetatable = next, tonumber, getmetatable, setmetatable

local M = {}

-- An empty JSON array (an empty Lua table encodes as {}).
local LIST = {}
M.empty_list = setmetatable({}, LIST)

-- ---- Lua patterns as ECMA regexes ----

-- classes both read alike, on ASCII (the C locale's ctype)
local CLASS = {
  a = "A-Za-z", d = "0-9", l = "a-z", u = "A-Z", w = "A-Za-z0-9", x = "0-9A-Fa-f",
  s = " \\t\\n\\v\\f\\r", c = "\\x00-\\x1f\\x7f",
  p = "!-/:-@\\[-`{-~",
}
-- characters an ECMA regex (with the u flag) reads as syntax outside a set
local SYNTAX = {}
for ch in ("^$\\.*+?()[]{}|/"):gmatch(".") do SYNTAX[ch] = true end

local function lit(ch)
  if SYNTAX[ch] then return "\\" .. ch end
  local b = ch:byte()
  if b < 32 or b > 126 then return fmt("\\x%02x", b) end
  return ch
end

local function set_lit(ch)
  if ch == "\\" or ch == "]" or ch == "[" or ch == "^" or ch == "-" then return "\\" .. ch end
  local b = ch:byte()
  if b < 32 or b > 126 then return fmt("\\x%02x", b) end
  return ch
end

-- The ECMA regex of a whole-string Lua pattern ("^...$", as portico.schema
-- compiles it), or nil when it has anything the two may read differently:
-- ".", a negated class (%D) or set ([^...]), a byte above 127.
function M.regex_of(p)
  if type(p) ~= "string" or sub(p, 1, 1) ~= "^" or sub(p, -1) ~= "$" then return nil end
  local body = sub(p, 2, -2)
  if find(body, "[\128-\255]") then return nil end
  local out, i, n = { "^" }, 1, #body
  while i <= n do
    local ch = sub(body, i, i)
    if ch == "%" then
      local nx = sub(body, i + 1, i + 1)
      if CLASS[nx] then
        out[#out + 1] = "[" .. CLASS[nx] .. "]"
      elseif nx:find("%a") or nx == "" then
        return nil -- %D, %b, %f, ... (schema refuses some; none translate)
      else
        out[#out + 1] = lit(nx)
      end
      i = i + 2
    elseif ch == "[" then
      local j = i + 1
      if sub(body, j, j) == "^" then return nil end
      local parts = { "[" }
      local first = true
      while j <= n do
        local c = sub(body, j, j)
        if c == "]" and not first then break end
        if c == "%" then
          local nx = sub(body, j + 1, j + 1)
          if CLASS[nx] then
            parts[#parts + 1] = CLASS[nx]
          elseif nx:find("%a") or nx == "" then
            return nil
          else
            parts[#parts + 1] = set_lit(nx)
          end
          j = j + 2
        elseif sub(body, j + 1, j + 1) == "-" and sub(body, j + 2, j + 2) ~= "]"
            and sub(body, j + 2, j + 2) ~= "" then
          local hi = sub(body, j + 2, j + 2)
          if hi == "%" then return nil end
          parts[#parts + 1] = set_lit(c) .. "-" .. set_lit(hi)
          j = j + 3
        else
          parts[#parts + 1] = set_lit(c)
          j = j + 1
        end
        first = false
      end
      if j > n then return nil end
      parts[#parts + 1] = "]"
      out[#out + 1] = concat(parts)
      i = j + 1
    elseif ch == "." then
      return nil -- any byte in Lua, any character but a line end in ECMA
    elseif ch == "-" and i > 1 then
      out[#out + 1] = "*?" -- Lua's lazy *: the same strings match a whole-string pattern
      i = i + 1
    elseif ch == "*" or ch == "+" or ch == "?" then
      out[#out + 1] = ch
      i = i + 1
    else
      out[#out + 1] = lit(ch)
      i = i + 1
    end
  end
  out[#out + 1] = "$"
  return concat(out)
end

-- ---- schemas from compiled models ----

local schema_of

local function scalar_schema(n)
  local s = {}
  local t = n.type
  if t == "any" then
    -- any JSON value: the empty schema
  elseif t == "object" then
    s.type = "object"
  else
    s.type = t
  end
  if n.enum_list then
    local list = {}
    for i, v in ipairs(n.enum_list) do list[i] = v end
    s.enum = list
  end
  if n.min or n.max then
    if t == "string" then
      s.minLength, s.maxLength = n.min, n.max
    elseif t == "array" then
      s.minItems, s.maxItems = n.min, n.max
    else
      s.minimum, s.maximum = n.min, n.max
    end
  end
  if n.pattern then
    s.pattern = M.regex_of(n.pattern)
    s["x-lua-pattern"] = n.pattern_source
  end
  return s
end

-- A field's default as JSON: an empty array default is [] (not {}).
function M.json_default(f)
  local d = f.default
  if f.node.kind == "array" and type(d) == "table" and next(d) == nil then return M.empty_list end
  return d
end

-- A compiled object node: fields minus those named in skip.
local function object_schema(n, skip)
  local s = { type = "object" }
  local props, required = {}, {}
  local any = false
  for i = 1, #n do
    local f = n[i]
    if not (skip and skip[f.name]) then
      local fs = schema_of(f.node)
      if f.has_default then fs.default = M.json_default(f) end
      if f.description then fs.description = f.description end
      props[f.name] = fs
      any = true
      if not f.optional and not f.has_default then required[#required + 1] = f.name end
    end
  end
  if any then s.properties = props end
  if #required > 0 then s.required = required end
  if n.reject then s.additionalProperties = false end
  return s
end
M.object_schema = object_schema

schema_of = function(n)
  if n.kind == "object" then return object_schema(n) end
  if n.kind == "array" then
    local s = { type = "array", items = schema_of(n.item) }
    s.minItems, s.maxItems = n.min, n.max
    return s
  end
  return scalar_schema(n)
end
M.schema_of = schema_of

-- ---- the document ----

local FROM_QUERY = { GET = true, HEAD = true, DELETE = true }
local HAS_BODY = { POST = true, PUT = true, PATCH = true }

local ERROR_REF = { ["$ref"] = "#/components/schemas/Error" }

local REASONS = {
  [400] = "Bad request: malformed JSON or input that fails the service's input model "
    .. "(the message lists every problem)",
  [401] = "No credential, or one that the channel's security refuses",
  [403] = "Refused: the service is not on the channel's list, or the caller may not call it",
  [404] = "Unknown service, or a service that is not loaded",
  [413] = "The request body is over server.max_body_bytes",
  [429] = "Over the channel's rate limit (Retry-After says when to try again)",
  [500] = "The service failed (its log line has the cid)",
  [502] = "The upstream target failed or answered malformed HTTP",
  [503] = "No upstream target is available, a backend is unavailable, or (the document's "
    .. "own path) the document is not made yet",
  [504] = "The upstream target or the reply did not come in time",
}

local function error_response(status)
  return { description = REASONS[status] or "Error",
           content = { ["application/json"] = { schema = ERROR_REF } } }
end

local function sec_key(sec) return sec.name end

-- The security scheme of a definition.
local function scheme_of(sec)
  local k = sec.kind
  local s
  if k == "basic_auth" then
    s = { type = "http", scheme = "basic" }
  elseif k == "api_key" then
    s = { type = "apiKey", ["in"] = "header", name = sec.header or "x-api-key" }
  elseif k == "jwt" then
    s = { type = "http", scheme = "bearer", bearerFormat = "JWT" }
    if sec.alg then s["x-portico-alg"] = sec.alg end
  elseif k == "client_cert" then
    s = { type = "mutualTLS" }
  else
    s = { type = "http", scheme = tostring(k) }
  end
  s.description = "security." .. tostring(k) .. " '" .. tostring(sec.name) .. "'"
    .. (sec.realm and " (realm " .. sec.realm .. ")" or "")
  return s
end

-- "/api/orders/{order_id}" -> { "order_id" }
local function captures(path)
  local list = {}
  for name in path:gmatch("{([^}/]+)}") do list[#list + 1] = name end
  return list
end

-- A service's compiled schemas, or {}.
local function compiled(svc)
  return svc and service.compiled(svc) or {}
end

local function field_of(node, name)
  if not node then return nil end
  for i = 1, #node do
    if node[i].name == name then return node[i] end
  end
end

-- The operation of method on a path that runs svc (nil: not loaded).
local function operation(ch, method, path_params, svc, svc_name, opts)
  local c = compiled(svc)
  local input, output = c.input, c.output
  local op = {
    operationId = opts.operation_id,
    tags = { ch.name },
    responses = {},
    ["x-portico-channel"] = ch.name,
    ["x-portico-service"] = svc_name,
  }
  if svc then
    op.summary = svc.summary
    op.description = svc.description
    if svc.tags then for _, t in ipairs(svc.tags) do op.tags[#op.tags + 1] = t end end
  else
    op.description = "service '" .. tostring(svc_name) .. "' is not loaded: requests answer 404"
  end
  local params, skip = {}, {}
  for _, p in ipairs(path_params) do
    local f = field_of(input, p)
    local s = f and schema_of(f.node) or { type = "string" }
    params[#params + 1] = { name = p, ["in"] = "path", required = true, schema = s,
                            description = f and f.description or nil }
    skip[p] = true
  end
  if opts.skip then skip[opts.skip] = true end
  for _, p in ipairs(opts.extra_params or {}) do params[#params + 1] = p end
  if input and FROM_QUERY[method] then
    -- the input comes from the query: one parameter a top-level field (an
    -- array: the key repeated); nested objects cannot come that way
    for i = 1, #input do
      local f = input[i]
      if not skip[f.name] and f.node.kind ~= "object" then
        local s = schema_of(f.node)
        if f.has_default then s.default = M.json_default(f) end
        local prm = { name = f.name, ["in"] = "query", required = not f.optional and not f.has_default,
                      schema = s }
        if f.description then prm.description = f.description end
        if f.node.kind == "array" then prm.style, prm.explode = "form", true end
        params[#params + 1] = prm
      end
    end
  end
  if #params > 0 then op.parameters = params end
  if HAS_BODY[method] or (not input and method ~= "GET" and method ~= "HEAD") then
    local s
    if input then
      s = object_schema(input, skip)
    else
      s = {} -- any JSON: the service reads request.payload itself
    end
    local media = { schema = s }
    if svc and svc.examples and svc.examples.input then media.example = svc.examples.input end
    op.requestBody = { required = s.required ~= nil, content = { ["application/json"] = media } }
  end
  local ok = { description = "The service's answer" }
  if method ~= "HEAD" then
    local media = { schema = output and object_schema(output) or {} }
    if svc and svc.examples and svc.examples.output then media.example = svc.examples.output end
    ok.content = { ["application/json"] = media }
  end
  op.responses["2XX"] = ok
  local statuses = { 400, 404, 500 }
  if HAS_BODY[method] or op.requestBody then statuses[#statuses + 1] = 413 end
  if ch.security then statuses[#statuses + 1] = 401; statuses[#statuses + 1] = 403 end
  if opts.listed then statuses[#statuses + 1] = 403 end
  if ch.rate_limit then statuses[#statuses + 1] = 429 end
  for _, st in ipairs(statuses) do op.responses[tostring(st)] = error_response(st) end
  op.responses.default = { description = "An error the service raised (self:error) or another "
    .. "error of the gateway", content = { ["application/json"] = { schema = ERROR_REF } } }
  if ch.security then op.security = { { [sec_key(ch.security)] = M.empty_list } } end
  return op
end

local function lower(m) return m:lower() end

local function op_id(...)
  local s = concat({ ... }, ".")
  return (gsub(s, "[^%w%._%-]", "_"))
end

-- The document (a table) for cfg; get(name) -> service module.
function M.build(cfg, get)
  if get == nil then get = require("portico.runtime").get end
  local paths, schemes = {}, {}
  local doc = {
    openapi = "3.1.0",
    info = { title = cfg.title or "portico", version = cfg.version or "0",
             description = "Generated by portico from its running config and the models of its "
               .. "services (docs/openapi.md)." },
    jsonSchemaDialect = "https://spec.openapis.org/oas/3.1/dialect/base",
    paths = paths,
    components = {
      schemas = {
        Error = {
          type = "object", required = { "error" },
          properties = {
            error = {
              type = "object", required = { "status", "message" },
              properties = {
                status = { type = "integer", minimum = 400, maximum = 599 },
                message = { type = "string" },
                cid = { type = "string", description = "the request's correlation id (logs)" },
              },
            },
          },
        },
      },
      securitySchemes = schemes,
    },
  }
  if cfg.servers and #cfg.servers > 0 then
    doc.servers = {}
    for i, u in ipairs(cfg.servers) do doc.servers[i] = { url = u } end
  end
  local tags, seen_tag = {}, {}
  local function add_path(p, method, op)
    paths[p] = paths[p] or {}
    paths[p][lower(method)] = op
  end
  for _, ch in ipairs(cfg.channels or {}) do
    if ch.security then schemes[sec_key(ch.security)] = scheme_of(ch.security) end
    local described = ch.type == "rest" or ch.type == "gateway" or ch.type == "openapi"
    if not seen_tag[ch.name] and described then
      seen_tag[ch.name] = true
      tags[#tags + 1] = { name = ch.name, description = ch.type .. " channel " .. ch.url_path }
    end
    local methods = ch.methods or {}
    if ch.type == "rest" then
      local svc = get(ch.service)
      local pp = captures(ch.url_path)
      for _, m in ipairs(methods) do
        add_path(ch.url_path, m, operation(ch, m, pp, svc, ch.service,
          { operation_id = op_id(ch.name, lower(m)) }))
      end
    elseif ch.type == "gateway" then
      local names = ch.services or {}
      for _, name in ipairs(names) do
        local p = gsub(ch.url_path, "{service}", (gsub(name, "%%", "%%%%")))
        local pp = captures(p)
        local svc = get(name)
        for _, m in ipairs(methods) do
          add_path(p, m, operation(ch, m, pp, svc, name,
            { operation_id = op_id(ch.name, name, lower(m)), skip = "service" }))
        end
      end
      if #names > 0 then
        -- /invoke?service=NAME: one operation for every listed service
        local p = gsub(ch.url_path, "{service}", "invoke")
        local pp = captures(p)
        for _, m in ipairs(methods) do
          local op = operation(ch, m, pp, nil, nil, {
            operation_id = op_id(ch.name, "invoke", lower(m)), listed = true,
            extra_params = { { name = "service", ["in"] = "query", required = true,
                               description = "the service to run (one of the channel's list)",
                               schema = { type = "string", enum = names } } } })
          op.description = "Runs the service named by ?service= with the input of that service "
            .. "(see its own path on this channel): " .. concat(names, ", ")
          op["x-portico-service"] = nil
          op["x-portico-services"] = names
          if op.requestBody then op.requestBody.content["application/json"].schema = {} end
          add_path(p, m, op)
        end
      end
    elseif ch.type == "openapi" then
      -- this document, on the public listener
      local op = {
        operationId = op_id(ch.name, "get"), tags = { ch.name },
        summary = "This OpenAPI document",
        responses = {
          ["200"] = { description = "The OpenAPI 3.1 document of the running config",
                      content = { ["application/json"] = { schema = { type = "object" } } } },
          ["503"] = error_response(503),
        },
      }
      if ch.security then
        op.security = { { [sec_key(ch.security)] = M.empty_list } }
        op.responses["401"], op.responses["403"] = error_response(401), error_response(403)
      end
      if ch.rate_limit then op.responses["429"] = error_response(429) end
      add_path(ch.url_path, "GET", op)
    elseif ch.type == "http_proxy" or ch.type == "websocket" or ch.type == "amqp_bus" then
      -- not described by a model: an extension of the document names them
      doc["x-portico-channels"] = doc["x-portico-channels"] or {}
      local e = { name = ch.name, type = ch.type, url_path = ch.url_path }
      if ch.security then e.security = sec_key(ch.security) end
      if ch.service then e.service = ch.service end
      if ch.services and #ch.services > 0 then e.services = ch.services end
      local list = doc["x-portico-channels"]
      list[#list + 1] = e
    end
  end
  if #tags > 0 then doc.tags = tags end
  if next(schemes) == nil then doc.components.securitySchemes = nil end
  return doc
end

-- ---- JSON with sorted keys ----

local null = cjson.null
-- JSON strings as RFC 8259 has them (cjson would write "\/" for every /)
local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
              ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
local function encode_string(v)
  if type(v) ~= "string" then return cjson.encode(v) end
  return '"' .. gsub(v, '[%z\1-\31"\\\127]', function(ch)
    return ESC[ch] or fmt("\\u%04x", ch:byte())
  end) .. '"'
end

local function is_list(t)
  local n = #t
  if n == 0 then return false end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

-- Keys that read better first (the rest follow, sorted).
local FIRST = { openapi = 1, info = 2, jsonSchemaDialect = 3, servers = 4, tags = 5, paths = 6,
                components = 7 }

local function key_less(a, b)
  local fa, fb = FIRST[a], FIRST[b]
  if fa and fb then return fa < fb end
  if fa or fb then return fa ~= nil end
  return a < b
end

local function enc(v, out, indent, top)
  local t = type(v)
  if t == "table" and getmetatable(v) == LIST then
    out[#out + 1] = "[]"
  elseif t == "table" and v ~= null then
    local inner = indent .. "  "
    if is_list(v) then
      out[#out + 1] = "["
      for i = 1, #v do
        out[#out + 1] = (i > 1 and ",\n" or "\n") .. inner
        enc(v[i], out, inner)
      end
      out[#out + 1] = "\n" .. indent .. "]"
      return
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    if #keys == 0 then out[#out + 1] = "{}"; return end
    sort(keys, top and key_less or nil)
    out[#out + 1] = "{"
    for i, k in ipairs(keys) do
      local x = v[k]
      if x == nil then x = v[tonumber(k)] end
      out[#out + 1] = (i > 1 and ",\n" or "\n") .. inner .. encode_string(k) .. ": "
      enc(x, out, inner)
    end
    out[#out + 1] = "\n" .. indent .. "}"
  elseif t == "number" and v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then
    out[#out + 1] = fmt("%d", v)
  else
    out[#out + 1] = encode_string(v)
  end
end

-- JSON text of doc: two-space indents, object keys sorted (the top level's
-- in the usual order), so the same document is the same text.
function M.encode(doc)
  local out = {}
  enc(doc, out, "", true)
  out[#out + 1] = "\n"
  return concat(out)
end

-- The host's entry: the text for cfg with this VM's services.
function M.document(cfg)
  return M.encode(M.build(cfg))
end

return M
