-- portico.http without the host: query encoding, argument checks, the head
-- it builds and the shaping of answers; self.out.http through portico.testing.
-- Calls through the host are covered by tests/integration/test_outgoing_http.py.
local http = require "portico.http"
local testing = require "portico.testing"

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

describe("portico.http", function()
  describe("encode_query", function()
    it("sorts keys and percent-encodes keys and values (RFC 3986 unreserved kept)", function()
      assert.equal("a=1&b=x%20y&c=%C3%A9%26%3D%2B%2F%3F%23~._-",
        http.encode_query({ c = "é&=+/?#~._-", a = 1, b = "x y" }))
      assert.equal("", http.encode_query({}))
      assert.equal("k%20ey=v", http.encode_query({ ["k ey"] = "v" }))
    end)

    it("repeats the key for a list, writes numbers and booleans plainly", function()
      assert.equal("id=3&id=1&n=1.5&on=true&page=2&z=9007199254740991",
        http.encode_query({ id = { 3, 1 }, page = 2, n = 1.5, on = true, z = 2 ^ 53 - 1 }))
      assert.equal("x=1", http.encode_query({ empty = {}, x = 1 }))
    end)

    it("refuses what has no query form", function()
      local cases = {
        { { [1] = "a" }, "query keys must be strings" },
        { { a = {} , b = function() end }, "query.b must be" },
        { { a = { x = 1 } }, "query.a must be" },
        { { a = { 1, {} } }, "query.a[2] must be" },
        { { a = 0 / 0 }, "query.a must be" },
      }
      for _, case in ipairs(cases) do
        local qs, err = http.encode_query(case[1])
        assert.is_nil(qs)
        assert.matches(case[2], err, 1, true)
      end
    end)

    it("escape is the same encoder, for path segments", function()
      assert.equal("a%2Fb%20c", http.escape("a/b c"))
      assert.equal("42", http.escape(42))
    end)
  end)

  describe("prepare", function()
    it("builds the request line and the headers portico adds", function()
      local p = assert(http.prepare("GET", "/customers", nil,
        { query = { page = 2, q = "a b" }, headers = { ["X-Tenant"] = "acme" } }, "cid-1"))
      assert.equal("GET", p.method)
      assert.equal("/customers?page=2&q=a%20b", p.target)
      assert.equal("GET /customers?page=2&q=a%20b HTTP/1.1\r\n" ..
        "X-Tenant: acme\r\nUser-Agent: portico\r\nAccept: */*\r\nX-Correlation-Id: cid-1\r\n", p.head)
      assert.is_nil(p.body)
      assert.is_true(p.retry)
      assert.is_false(p.head_only)
      assert.is_nil(p.timeout_ms)
    end)

    it("sends a table as JSON with its length and type, a string as it is", function()
      local p = assert(http.prepare("POST", "/c", { name = "x" }, nil, nil))
      assert.equal('{"name":"x"}', p.body)
      assert.matches("Content-Type: application/json\r\n", p.head, 1, true)
      assert.matches("Content-Length: 12\r\n", p.head, 1, true)
      assert.is_false(p.retry) -- POST is not idempotent: never sent twice
      p = assert(http.prepare("PUT", "/c", "raw text", { headers = { ["content-type"] = "text/plain" } }))
      assert.equal("raw text", p.body)
      assert.matches("content-type: text/plain\r\n", p.head, 1, true)
      assert.not_matches("application/json", p.head, 1, true)
      assert.is_true(p.retry)
      p = assert(http.prepare("POST", "/c", nil, nil))
      assert.matches("Content-Length: 0\r\n", p.head, 1, true)
      p = assert(http.prepare("DELETE", "/c", nil, { body = "x" }))
      assert.matches("Content-Length: 1\r\n", p.head, 1, true)
    end)

    it("lets headers replace the defaults and repeats a list", function()
      local p = assert(http.prepare("get", "/a?x=1", nil, {
        query = "y=2", timeout = 1.5,
        headers = { Accept = "application/json", ["User-Agent"] = "me", ["X-Correlation-Id"] = "mine",
          ["X-Many"] = { "1", "2" }, ["X-N"] = 7 },
      }, "cid-2"))
      assert.equal("GET", p.method)
      assert.equal("/a?x=1&y=2", p.target)
      assert.equal(1500, p.timeout_ms)
      assert.equal("GET /a?x=1&y=2 HTTP/1.1\r\nAccept: application/json\r\nUser-Agent: me\r\n" ..
        "X-Correlation-Id: mine\r\nX-Many: 1\r\nX-Many: 2\r\nX-N: 7\r\n", p.head)
    end)

    it("encodes bytes beyond ASCII in the path, keeps what is already encoded", function()
      local p = assert(http.prepare("GET", "/zoë/a%20b", nil, { query = "?q=ü" }))
      assert.equal("/zo%C3%AB/a%20b?q=%C3%BC", p.target)
      p = assert(http.prepare("HEAD", "/", nil, nil))
      assert.is_true(p.head_only)
    end)

    it("encodes query keys and values so none can end the target or the line", function()
      local p = assert(http.prepare("GET", "/q", nil,
        { query = { ["k&x"] = "a&b=c d\r\nHost: e#f", n = { 1, "2/3" } } }))
      assert.equal("GET /q?k%26x=a%26b%3Dc%20d%0D%0AHost%3A%20e%23f&n=1&n=2%2F3 HTTP/1.1\r\n",
        p.head:match("^[^\n]*\n"))
    end)

    it("leaves out a cid that could break the head", function()
      local p = assert(http.prepare("GET", "/", nil, nil, "bad\r\nX-Evil: 1"))
      assert.not_matches("Evil", p.head, 1, true)
    end)

    it("refuses mistakes with a message saying what is wrong", function()
      local cases = {
        { { 42, "/" }, "method must be an HTTP method" },
        { { "GE T", "/" }, "method must be an HTTP method" },
        { { "CONNECT", "/" }, "CONNECT cannot be used" },
        { { "GET", "x" }, "path must be a string starting with '/'" },
        { { "GET", nil }, "path must be a string starting with '/', got nil" },
        { { "GET", "/a b" }, "path must not hold spaces" },
        { { "GET", "/a\r\nHost: x" }, "path must not hold spaces" },
        { { "GET", "/a#frag" }, "path must not hold" },
        { { "GET", "/a\0b" }, "path must not hold" },
        { { "GET", "/a\127" }, "path must not hold" },
        { { "GET\r\nX: 1", "/" }, "method must be an HTTP method" },
        { { "GET", "/", nil, { query = "a=1\r\nX: 2" } }, "query must not hold" },
        { { "GET", "/", nil, { headers = { ["X-A"] = "a\r\nInjected: 1" } } }, "header X-A must not hold CR, LF" },
        { { "GET", "/", nil, { headers = { ["X-A"] = { "1", "2\n" } } } }, "header X-A must not hold CR, LF" },
        { { "GET", "/", nil, "opts" }, "opts must be a table, got string" },
        { { "GET", "/", nil, { header = {} } }, "unknown option 'header'" },
        { { "GET", "/", nil, { query = 5 } }, "query must be a table or a string" },
        { { "GET", "/", nil, { query = "a b" } }, "query must not hold spaces" },
        { { "GET", "/", nil, { headers = "x" } }, "headers must be a table" },
        { { "GET", "/", nil, { headers = { ["X-A"] = "1\r\nX-B: 2" } } }, "header X-A must not hold CR, LF" },
        { { "GET", "/", nil, { headers = { ["X-A"] = "a\0b" } } }, "header X-A must not hold CR, LF" },
        { { "GET", "/", nil, { headers = { ["X A"] = "1" } } }, "header names must be HTTP tokens" },
        { { "GET", "/", nil, { headers = { ["X-A\n"] = "1" } } }, "header names must be HTTP tokens" },
        { { "GET", "/", nil, { headers = { [1] = "1" } } }, "header names must be HTTP tokens" },
        { { "GET", "/", nil, { headers = { ["X-A"] = true } } }, "header X-A must be a string" },
        { { "GET", "/", nil, { headers = { ["X-A"] = {} } } }, "header X-A must be a string" },
        { { "GET", "/", nil, { headers = { Host = "evil" } } }, "header Host is set by portico" },
        { { "GET", "/", nil, { headers = { ["content-length"] = "1" } } }, "is set by portico" },
        { { "GET", "/", nil, { headers = { ["Transfer-Encoding"] = "chunked" } } }, "is set by portico" },
        { { "GET", "/", nil, { headers = { Connection = "close" } } }, "is set by portico" },
        { { "GET", "/", nil, { timeout = 0 } }, "timeout must be a number of seconds" },
        { { "GET", "/", nil, { timeout = "5s" } }, "timeout must be a number of seconds" },
        { { "POST", "/", {}, { data = {} } }, "give the body once" },
        { { "POST", "/", nil, { body = {} } }, "opts.body must be a string" },
        { { "POST", "/", 42 }, "data must be a table or a string, got number" },
        { { "POST", "/", { f = print } }, "cannot be sent as JSON" },
        { { "HEAD", "/", nil, { body = "x" } }, "a HEAD request has no body" },
      }
      for _, case in ipairs(cases) do
        local a = case[1]
        local p, err = http.prepare(a[1], a[2], a[3], a[4], nil)
        assert.is_nil(p, case[2])
        assert.matches(case[2], err, 1, true)
      end
    end)
  end)

  describe("shape", function()
    it("decodes JSON bodies when the content type says JSON", function()
      local res = http.shape(200, { ["content-type"] = "application/json; charset=utf-8" }, '{"a":1}')
      assert.same({ a = 1 }, res.json)
      assert.equal('{"a":1}', res.body)
      assert.same({ x = true }, http.shape(200, { ["content-type"] = "application/problem+json" }, '{"x":true}').json)
      assert.is_nil(http.shape(200, { ["content-type"] = "text/plain" }, '{"a":1}').json)
      assert.is_nil(http.shape(200, { ["content-type"] = "application/json" }, "{not json").json)
      -- a backend's JSON is held to RFC 8259 like a client's; the body stays as it came
      local lenient = http.shape(200, { ["content-type"] = "application/json" }, '{"a": NaN}')
      assert.is_nil(lenient.json)
      assert.equal('{"a": NaN}', lenient.body)
      assert.is_nil(http.shape(200, { ["content-type"] = "application/json" }, '"caf\233"').json)
      assert.is_nil(http.shape(204, { ["content-type"] = "application/json" }, "").json)
      assert.is_nil(http.shape(200, {}, '{"a":1}').json)
    end)

    it("names failures after the connection", function()
      assert.equal("crm: timed out (x did not answer)", http.failure("crm", "timeout", "x did not answer"))
      assert.equal("crm: connect failed (refused)", http.failure("crm", "connect", "refused"))
      assert.equal("crm: the response is larger than 16MB", http.failure("crm", "too_large", "", 16 * 1024 * 1024))
      assert.equal("no outgoing.http connection named 'crm'",
        http.failure("crm", "unknown", "no outgoing.http connection named 'crm'"))
    end)
  end)

  describe("self.out.http[name]", function()
    local out = http.new({ cid = "c1" })

    it("raises on programmer mistakes, blaming the caller's line", function()
      local crm = out.crm
      local cases = {
        { function() crm:get("nope") end, "http:get: path must be a string starting with '/'" },
        { function() crm:post("/", 42) end, "http:post: data must be a table or a string" },
        { function() crm:request("G T", "/") end, "http:request: method must be" },
        { function() crm:put("/", {}, { headers = { Host = "x" } }) end, "http:put: header Host is set by portico" },
        { function() crm:delete("/", { query = true }) end, "http:delete: query must be" },
        { function() crm.get("/x") end, "with a colon" },
        { function() return out[42] end, "name must be the name of an outgoing.http connection" },
      }
      for _, case in ipairs(cases) do
        local ok, err = pcall(case[1])
        assert.is_false(ok)
        assert.matches(case[2], err, 1, true)
        assert.matches("http_spec.lua", err, 1, true) -- error(msg, 2): the caller's line
      end
    end)

    it("gives one object per name and is read-only", function()
      assert.equal(out.crm, out["crm"])
      assert.are_not.equal(out.crm, out.erp)
      assert.has_error(function() out.crm = 1 end)
    end)

    it("returns nil, err outside the host instead of raising", function()
      local res, err = out.crm:get("/x", { query = { a = 1 } })
      assert.is_nil(res)
      assert.matches("not available outside the portico host", err, 1, true)
    end)

    it("passes the built request to the transport and shapes its answer", function()
      local seen
      local o = http.new({ cid = "cid-9" }, function(name, head, body, retry, head_only, tmo, max, p)
        seen = { name = name, head = head, body = body, retry = retry, head_only = head_only, tmo = tmo, max = max }
        return 201, { ["content-type"] = "application/json" }, '{"id":7}'
      end)
      local res, err = o.crm:post("/c", { n = 1 }, { timeout = 2 })
      assert.is_nil(err)
      assert.same({ status = 201, headers = { ["content-type"] = "application/json" }, body = '{"id":7}',
        json = { id = 7 } }, res)
      assert.equal("crm", seen.name)
      assert.equal('{"n":1}', seen.body)
      assert.is_false(seen.retry)
      assert.equal(2000, seen.tmo)
      assert.equal(http.MAX_BODY, seen.max)
      assert.matches("X-Correlation-Id: cid-9\r\n", seen.head, 1, true)
      o = http.new({}, function() return nil, "timeout", "127.0.0.1:1 did not answer within 10 ms" end)
      res, err = o.crm:get("/")
      assert.is_nil(res)
      assert.equal("crm: timed out (127.0.0.1:1 did not answer within 10 ms)", err)
    end)
  end)

  describe("through portico.testing", function()
    local dir
    before_each(function()
      dir = os.tmpname()
      os.remove(dir)
      os.execute("mkdir -p '" .. dir .. "'")
      write(dir .. "/fetch.lua", [[
local service = require "portico.service"
local M = service.new { name = "t.fetch" }
function M:handle()
  local crm = self.out.http["crm"]
  local res, err = crm:get("/customers/" .. self.request.payload.id, { query = { full = true } })
  if not res then return self:error(502, err) end
  local created = assert(crm:post("/audit", { seen = res.json.name }))
  self.response.payload = { name = res.json.name, status = res.status, audit = created.status }
end
return M
]])
    end)
    after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

    it("answers from stubs and records what was sent", function()
      local t = testing.new()
      t:http_stub("crm", function(req)
        if req.method == "GET" then return { json = { name = "Ann" } } end
        return { status = 201, body = "" }
      end)
      local res = t:call(dir .. "/fetch.lua", { payload = { id = 7 }, cid = "cid-s" })
      assert.equal(200, res.status)
      assert.same({ name = "Ann", status = 200, audit = 201 }, res.payload)
      local get, post = t.sent.http[1], t.sent.http[2]
      assert.equal("GET", get.method)
      assert.equal("/customers/7", get.path)
      assert.equal("full=true", get.query_string)
      assert.same({ full = "true" }, get.query)
      assert.equal("cid-s", get.headers["x-correlation-id"])
      assert.equal("portico", get.headers["user-agent"])
      assert.equal("POST", post.method)
      assert.equal('{"seen":"Ann"}', post.body)
      assert.same({ seen = "Ann" }, post.data)
      assert.equal("application/json", post.headers["content-type"])
    end)

    it("plays failures and unknown connections", function()
      local t = testing.new()
      local res = t:call(dir .. "/fetch.lua", { payload = { id = 1 } })
      assert.equal(502, res.status)
      assert.equal("no outgoing.http connection named 'crm'", res.error)
      t:http_stub("crm", function() return nil, "crm: timed out" end)
      res = t:call(dir .. "/fetch.lua", { payload = { id = 1 } })
      assert.equal("crm: timed out", res.error)
    end)
  end)
end)
