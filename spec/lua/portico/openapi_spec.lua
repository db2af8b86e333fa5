-- portico.openapi without the host: schemas from compiled models, operations
-- per channel, security schemes, Lua patterns as regexes, and the stable
-- encoding. The document of a running gateway, and its validation by
-- third-party tools, is tests/integration/test_openapi.py.
local openapi = require "portico.openapi"
local service = require "portico.service"
local schema = require "portico.schema"
local cjson = require "cjson"

local orders_create = service.new {
  name = "orders.create", unknown = "reject",
  summary = "Create an order", tags = { "orders" },
  description = "An order with a nested model.",
  input = {
    customer_id = "integer(1..)",
    currency = "enum(EUR,USD,GBP)=EUR",
    note = "string(..500)?",
    shipping = { zip = "string(3..10)~[%w%- ]+", country = "string(2..2)~%u%u" },
    lines = { { sku = "string(1..32)", qty = schema.field { type = "integer", min = 1,
                description = "how many" } }, min = 1, max = 100 },
  },
  output = { order_id = "string", total = "number" },
  examples = { input = { customer_id = 1, shipping = { zip = "123", country = "DE" },
                         lines = { { sku = "A", qty = 1 } } },
               output = { order_id = "ord-1", total = 9.5 } },
}
local orders_get = service.new {
  name = "orders.get",
  input = { order_id = "integer(1..)", lines = "boolean=true", tag = { "string" } },
  output = { order_id = "integer" },
}
local echo = service.new { name = "demo.echo" }
local services = { ["orders.create"] = orders_create, ["orders.get"] = orders_get,
                   ["demo.echo"] = echo }
local function get(name) return services[name] end

local basic = { name = "api.users", kind = "basic_auth", realm = "portico" }
local cfg = {
  version = "1.2.3", servers = { "http://127.0.0.1:1" },
  channels = {
    { name = "create", type = "rest", url_path = "/api/orders", methods = { "POST" },
      service = "orders.create", security = basic, rate_limit = true },
    { name = "get", type = "rest", url_path = "/api/orders/{order_id}", methods = { "GET" },
      service = "orders.get",
      security = { name = "keys", kind = "api_key", header = "x-api-key" } },
    { name = "gw", type = "gateway", url_path = "/gateway/{service}", methods = { "GET", "POST" },
      services = { "orders.get", "demo.echo", "gone" },
      security = { name = "tokens", kind = "jwt", alg = "HS256" } },
    { name = "mtls", type = "rest", url_path = "/m", methods = { "POST" }, service = "demo.echo",
      security = { name = "certs", kind = "client_cert" } },
    { name = "px", type = "http_proxy", url_path = "/px" },
    { name = "ws", type = "websocket", url_path = "/ws", service = "demo.echo" },
  },
}

describe("portico.openapi", function()
  local doc = openapi.build(cfg, get)

  it("is OpenAPI 3.1 with the config's version and servers", function()
    assert.equal("3.1.0", doc.openapi)
    assert.equal("1.2.3", doc.info.version)
    assert.same({ { url = "http://127.0.0.1:1" } }, doc.servers)
  end)

  it("turns a nested model into a request body schema", function()
    local op = doc.paths["/api/orders"].post
    assert.equal("Create an order", op.summary)
    assert.equal("An order with a nested model.", op.description)
    assert.same({ "create", "orders" }, op.tags)
    local s = op.requestBody.content["application/json"].schema
    assert.is_true(op.requestBody.required)
    assert.same({ "customer_id", "lines", "shipping" }, s.required)
    assert.is_false(s.additionalProperties)
    assert.same({ type = "integer", minimum = 1 }, s.properties.customer_id)
    assert.same({ type = "string", enum = { "EUR", "USD", "GBP" }, default = "EUR" },
      s.properties.currency)
    assert.same({ type = "string", maxLength = 500 }, s.properties.note)
    local lines = s.properties.lines
    assert.equal("array", lines.type)
    assert.equal(1, lines.minItems)
    assert.equal(100, lines.maxItems)
    assert.same({ type = "integer", minimum = 1, description = "how many" },
      lines.items.properties.qty)
    local zip = s.properties.shipping.properties.zip
    assert.equal("^[A-Za-z0-9\\- ]+$", zip.pattern)
    assert.equal("[%w%- ]+", zip["x-lua-pattern"])
    assert.equal("^[A-Z][A-Z]$", s.properties.shipping.properties.country.pattern)
    assert.same(orders_create.examples.input, op.requestBody.content["application/json"].example)
  end)

  it("describes the answer and the errors that apply", function()
    local op = doc.paths["/api/orders"].post
    local ok = op.responses["2XX"].content["application/json"]
    assert.same({ type = "object", required = { "order_id", "total" },
                  properties = { order_id = { type = "string" }, total = { type = "number" } } },
      ok.schema)
    assert.same({ order_id = "ord-1", total = 9.5 }, ok.example)
    for _, st in ipairs({ "400", "401", "403", "404", "413", "429", "500", "default" }) do
      assert.equal("#/components/schemas/Error",
        op.responses[st].content["application/json"].schema["$ref"], st)
    end
    assert.is_nil(doc.paths["/api/orders/{order_id}"].get.responses["429"])
    assert.same({ { ["api.users"] = openapi.empty_list } }, op.security)
    assert.matches('"security": %[\n%s+{\n%s+"api.users": %[%]', openapi.encode(doc))
  end)

  it("takes GET input from path captures and the query", function()
    local op = doc.paths["/api/orders/{order_id}"].get
    assert.is_nil(op.requestBody)
    local by = {}
    for _, p in ipairs(op.parameters) do by[p["in"] .. ":" .. p.name] = p end
    assert.same({ name = "order_id", ["in"] = "path", required = true,
                  schema = { type = "integer", minimum = 1 } }, by["path:order_id"])
    assert.is_nil(by["query:order_id"])
    assert.same({ name = "lines", ["in"] = "query", required = false,
                  schema = { type = "boolean", default = true } }, by["query:lines"])
    assert.equal("form", by["query:tag"].style)
    assert.is_true(by["query:tag"].explode)
  end)

  it("lists a gateway's services, each on its own path, and /invoke", function()
    assert.truthy(doc.paths["/gateway/orders.get"].get)
    assert.truthy(doc.paths["/gateway/orders.get"].post)
    local post = doc.paths["/gateway/orders.get"].post
    assert.same({ "order_id", "tag" }, post.requestBody.content["application/json"].schema.required)
    assert.matches("not loaded", doc.paths["/gateway/gone"].get.description)
    local inv = doc.paths["/gateway/invoke"].get
    assert.same({ "orders.get", "demo.echo", "gone" }, inv.parameters[1].schema.enum)
    assert.truthy(inv.responses["403"])
    -- a service with no input model takes any JSON body
    assert.same({}, doc.paths["/gateway/demo.echo"].post.requestBody.content["application/json"].schema)
    assert.is_false(doc.paths["/gateway/demo.echo"].post.requestBody.required)
  end)

  it("names each security scheme as OpenAPI 3.1 does", function()
    local s = doc.components.securitySchemes
    assert.equal("basic", s["api.users"].scheme)
    assert.same("apiKey", s.keys.type)
    assert.same("header", s.keys["in"])
    assert.same("x-api-key", s.keys.name)
    assert.same("bearer", s.tokens.scheme)
    assert.same("JWT", s.tokens.bearerFormat)
    assert.same("mutualTLS", s.certs.type)
  end)

  it("names http_proxy and websocket channels in an extension, not as paths", function()
    assert.is_nil(doc.paths["/px"])
    assert.is_nil(doc.paths["/ws"])
    local names = {}
    for _, e in ipairs(doc["x-portico-channels"]) do names[e.name] = e.type end
    assert.same({ px = "http_proxy", ws = "websocket" }, names)
  end)

  it("translates only the Lua patterns a regex reads alike", function()
    local cases = {
      { "^%d+$", "^[0-9]+$" },
      { "^[%u%d%-]+$", "^[A-Z0-9\\-]+$" },
      { "^a-b$", "^a*?b$" },
      { "^%.x?$", "^\\.x?$" },
      { "^[a-z]+$", "^[a-z]+$" },
      { "^{x}|$", "^\\{x\\}\\|$" },
      { "^.+$", nil },
      { "^%D$", nil },
      { "^[^a]$", nil },
      { "^\195\169$", nil },
    }
    for _, c in ipairs(cases) do assert.equal(c[2], openapi.regex_of(c[1]), c[1]) end
  end)

  it("encodes the same document as the same text, keys sorted", function()
    local a = openapi.encode(openapi.build(cfg, get))
    local b = openapi.encode(openapi.build(cfg, get))
    assert.equal(a, b)
    assert.matches('^{\n  "openapi": "3.1.0",\n  "info"', a)
    assert.same(cjson.decode(a).paths["/api/orders"].post.operationId, "create.post")
    -- strings as RFC 8259 writes them: no \/, controls as \u00XX
    assert.equal('{\n  "a": "/x\\"\\\\\\n\\u0001"\n}\n', openapi.encode({ a = '/x"\\\n\1' }))
  end)
end)

describe("portico.service documentation fields", function()
  local function refused(def, msg)
    local ok, err = pcall(service.new, def)
    assert.is_false(ok)
    assert.matches(msg, err, 1, true)
  end

  it("refuses a bad description, summary, tags or examples", function()
    refused({ name = "a", description = 42 }, "description must be a string")
    refused({ name = "a", summary = "two\nlines" }, "summary must be one line")
    refused({ name = "a", tags = "x" }, "tags must be a list of strings")
    refused({ name = "a", tags = { "x", "x" } }, "tags has 'x' twice")
    refused({ name = "a", tags = { "" } }, "tags[1] must be a non-empty line")
    refused({ name = "a", examples = { request = {} } }, "examples: unknown key 'request'")
    refused({ name = "a", examples = { input = 3 } }, "examples.input must be a table")
    refused({ name = "a", input = { n = "integer" }, examples = { input = { n = "x" } } },
      "examples.input fails the input schema: n: expected integer, got string")
    refused({ name = "a", output = { n = "integer" }, examples = { output = {} } },
      "examples.output fails the output schema: n: missing")
    refused({ name = "a", input = { n = schema.field { type = "integer", description = 1 } } },
      "has a description that is not a string")
  end)

  it("keeps good ones", function()
    local s = service.new { name = "a", summary = "S", tags = { "t" }, description = "D",
                            input = { n = "integer" }, examples = { input = { n = 1 } } }
    assert.equal("S", s.summary)
    assert.same({ "t" }, s.tags)
    assert.same({ n = 1 }, s.examples.input)
  end)
end)
